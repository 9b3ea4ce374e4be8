//! Certificates for TLS tests, made with the `openssl` command line: a CA of the test's own and
//! server or client certificates it signs, valid for two days.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority whose files live in `dir`.
pub struct Ca {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

/// A certificate and its private key (PEM files).
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A self-signed CA named `name` (also its file names).
    pub fn new(dir: &Path, name: &str) -> Ca {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &s(&key),
            "-out",
            &s(&cert),
        ]);
        Ca {
            cert,
            key,
            dir: dir.to_owned(),
        }
    }

    /// A server certificate for the DNS names and IP addresses in `names` ("DNS:localhost").
    pub fn server(&self, file: &str, names: &str) -> Issued {
        self.issue(
            file,
            "server",
            &format!("subjectAltName={names}\nextendedKeyUsage=serverAuth\n"),
        )
    }

    /// A client certificate whose common name is the PostgreSQL user `user`.
    pub fn client(&self, file: &str, user: &str) -> Issued {
        self.issue(file, user, "extendedKeyUsage=clientAuth\n")
    }

    fn issue(&self, file: &str, cn: &str, ext: &str) -> Issued {
        let cert = self.dir.join(format!("{file}.crt"));
        let key = self.dir.join(format!("{file}.key"));
        let csr = self.dir.join(format!("{file}.csr"));
        let ext_file = self.dir.join(format!("{file}.ext"));
        std::fs::write(&ext_file, format!("basicConstraints=CA:FALSE\n{ext}")).unwrap();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &s(&key),
            "-out",
            &s(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&self.cert),
            "-CAkey",
            &s(&self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &s(&ext_file),
            "-out",
            &s(&cert),
        ]);
        Issued { cert, key }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command line tool (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
