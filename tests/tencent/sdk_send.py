# Sends one SendSms through the official tencentcloud-sdk-python (pinned in .ci/run) to the
# endpoint given, so the test fake's signature check and verifyd's signer can both be held
# against the SDK's own signing. Prints the SDK's headers and body as one JSON line, then the
# answer or the error code.
import json
import sys

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models, sms_client

endpoint, secret_id, secret_key, app_id = sys.argv[1:5]
profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=endpoint))
client = sms_client.SmsClient(credential.Credential(secret_id, secret_key), "ap-guangzhou", profile)
req = models.SendSmsRequest()
req.from_json_string(json.dumps({
    "PhoneNumberSet": ["+8613800138000"],
    "SmsSdkAppId": app_id,
    "SignName": "腾讯云",
    "TemplateId": "449739",
    "TemplateParamSet": ["123456"],
}))
try:
    resp = client.SendSms(req)
    print("OK " + json.loads(resp.to_json_string())["SendStatusSet"][0]["SerialNo"])
except TencentCloudSDKException as e:
    print("ERR " + str(e.code))
