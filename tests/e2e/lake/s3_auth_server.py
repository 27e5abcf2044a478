"""An S3-compatible server that checks credentials: moto's S3 (from PyPI), behind a check
of the SigV4 query-string signature every request of the lake sink carries.

    python s3_auth_server.py PORT ACCESS_KEY_ID SECRET_ACCESS_KEY

moto itself checks signatures only in the Authorization header, which the sink does not
send (it signs the URL, as S3 allows). A request signed with another key id is refused
403 InvalidAccessKeyId, one whose signature does not match 403 SignatureDoesNotMatch, an
expired one 403 AccessDenied, as S3 does. Requests with an Authorization header (the
test's own boto3 client) pass to moto unchecked. Listens on 127.0.0.1 only.
"""
import datetime
import hashlib
import hmac
import sys
import urllib.parse

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

port, key_id, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
moto = DomainDispatcherApplication(create_backend_app)


def quote(s):
    return urllib.parse.quote(s, safe="-_.~")


def refuse(start_response, code, message):
    body = f"<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    query = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    params = dict(query)
    if "X-Amz-Signature" not in params:
        return moto(environ, start_response)
    credential = params.get("X-Amz-Credential", "").split("/")
    if len(credential) != 5 or credential[0] != key_id:
        return refuse(start_response, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    when = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    if datetime.datetime.now(datetime.timezone.utc) > when + datetime.timedelta(seconds=int(params["X-Amz-Expires"])):
        return refuse(start_response, "AccessDenied", "Request has expired")
    path = environ.get("RAW_URI", environ.get("PATH_INFO", "/")).split("?", 1)[0]
    canonical_query = "&".join(
        f"{quote(k)}={quote(v)}" for k, v in sorted(query) if k != "X-Amz-Signature")
    signed = params["X-Amz-SignedHeaders"].split(";")
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    headers["host"] = environ.get("HTTP_HOST", "")
    canonical_headers = "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
    canonical = "\n".join([environ["REQUEST_METHOD"], path, canonical_query, canonical_headers,
                           params["X-Amz-SignedHeaders"], "UNSIGNED-PAYLOAD"])
    scope = "/".join(credential[1:])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in credential[1:]:
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), params["X-Amz-Signature"]):
        return refuse(start_response, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
    return moto(environ, start_response)


run_simple("127.0.0.1", port, app, threaded=True)
