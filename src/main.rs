//! The `verifyd` binary: parse the command line, run, report errors on stderr.

fn main() -> std::process::ExitCode {
    match verifyd::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verifyd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
