"""Secret redaction (keel.core.redaction): a table of realistic secrets, each masked wherever it
sits (a config value, a nested dict, a list, a URL, a header), and look-alikes left alone."""

from __future__ import annotations

import json
import time

import pytest

from keel.core.batch import WriteBatch
from keel.core.config import Layer, parse_layer, resolve
from keel.core.redaction import (
    MAX_DEPTH,
    REDACTED,
    add_secret_keys,
    is_secret_key,
    redact_argv,
    redact_mapping,
    redact_record,
    redact_record_secrets,
    redact_tag,
    redact_value,
)
from keel.core.values import decode_param, encode_param
from keel.errors import InvalidInput
from keel.services.redaction import redact_batch, use_workspace_keys, workspace_keys

# (name, text as an application would hold it, the secret part that must never show, what may show)
SECRETS = [
    ("postgres url", "postgresql://app:Tr0ub4dor-and-3@db/prod", "Tr0ub4dor-and-3", "postgresql://app:***@db/prod"),
    ("mysql url, '@' and '/' in the password", "mysql://root:p@ss/w0rd!x@db:3306/app", "ss/w0rd!x", "mysql://root:***@db:3306/app"),
    ("redis url, password only", "redis://:Hunter2hunter2@cache:6379/0", "Hunter2hunter2", "redis://:***@cache:6379/0"),
    ("mongodb+srv url", "mongodb+srv://admin:Adm1nPassw0rd@cluster0.a1b2c.mongodb.net/db?retryWrites=true",
     "Adm1nPassw0rd", "mongodb+srv://admin:***@cluster0.a1b2c.mongodb.net/db?retryWrites=true"),
    ("sentry dsn", "https://5f2b8e1c9d7a4e3f8b6c1d2e3f4a5b6c@o123456.ingest.sentry.io/7891011",
     "5f2b8e1c9d7a4e3f8b6c1d2e3f4a5b6c", "https://***@o123456.ingest.sentry.io/7891011"),
    ("slack webhook", "https://hooks.slack.com/services/T0A1B2C3D/B0E1F2G3H/xYzAbCdEfGhIjKlMnOpQrStU",
     "xYzAbCdEfGhIjKlMnOpQrStU", "https://hooks.slack.com/services/***"),
    ("discord webhook", "https://discord.com/api/webhooks/112233445566778899/AbC-dEf_GhIjKlMnOpQrStUvWxYz0123456789",
     "AbC-dEf_GhIjKlMnOpQrStUvWxYz0123456789", "https://discord.com/api/webhooks/***"),
    ("teams webhook", "https://acme.webhook.office.com/webhookb2/1a2b3c4d-0000@5e6f/IncomingWebhook/9f8e7d6c/0a1b",
     "IncomingWebhook/9f8e7d6c", "https://acme.webhook.office.com/webhookb2/***"),
    ("token query parameter", "https://api.example.com/v1/export?format=csv&token=q8W3eR5tY7uI9oP1",
     "q8W3eR5tY7uI9oP1", "https://api.example.com/v1/export?format=csv&token=***"),
    ("signed url", "https://bucket.s3.amazonaws.com/f.bin?X-Amz-Credential=AKIAZ7Q4XK2M9PL3VN8R%2F20240101&X-Amz-Signature=9a8b7c6d5e4f3a2b1c0d",
     "9a8b7c6d5e4f3a2b1c0d", "X-Amz-Signature=***"),
    ("azure sas", "https://acct.blob.core.windows.net/c/f?sv=2022-11-02&sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA%3D%3D",
     "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA", "sig=***"),
    ("telegram bot url", "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage",
     "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "https://api.telegram.org/bot***/sendMessage"),
    ("bearer header value", "Bearer 9f8e7d6c5b4a39281726354453627181", "9f8e7d6c5b4a39281726354453627181",
     "Bearer ***"),
    ("basic header value", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l", "Basic ***"),
    ("openai key", "sk-Zq3X9vB2nM7kL4pR8tW1yA6cE5hJ0gF3dS2aQ9wE8rT7", "Zq3X9vB2nM7kL4pR8tW1yA6cE5hJ0gF3", REDACTED),
    ("openai project key", "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90Uv12Wx34_yZ-56",
     "Ab12Cd34Ef56Gh78Ij90Kl12", REDACTED),
    ("anthropic key", "sk-ant-api03-q2W3e4R5t6Y7u8I9o0P1a2S3d4F5g6H7j8K9l0Z1x2C3v4B5n6M7-AbCdEfAA",
     "q2W3e4R5t6Y7u8I9o0P1a2S3d4F5g6H7", REDACTED),
    ("aws key pair", "AKIAZ7Q4XK2M9PL3VN8R kP9/xQ2vR7tY4uW1zA8bC5dE3fG6hJ0kL2mN4pQ7",
     "kP9/xQ2vR7tY4uW1zA8bC5dE3fG6hJ0kL2mN4pQ7", f"{REDACTED} {REDACTED}"),
    ("aws access key id", "ASIAY3K7R2M9QW4ZL8TX", "ASIAY3K7R2M9QW4ZL8TX", REDACTED),
    ("aws env line", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE1",
     "wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key = ***"),
    ("github classic token", "ghp_R4nD0mT0k3nV4lu3Xy2Zw9Qa8Sb7Tc6Ud5Ve4", "R4nD0mT0k3nV4lu3Xy2Zw9Qa8", REDACTED),
    ("github oauth token", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "16C7e42F292c6912E7710c83", REDACTED),
    ("github server token", "ghs_x9Y8w7V6u5T4s3R2q1P0o9N8m7L6k5J4i3H2", "x9Y8w7V6u5T4s3R2q1P0o9N8", REDACTED),
    ("github fine-grained pat", "github_pat_11ABCDEFG0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPq",
     "11ABCDEFG0aBcDeFgHiJkL", REDACTED),
    ("slack bot token", "xoxb-2048192837465-1029384756102-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx",
     REDACTED),
    ("slack user token", "xoxp-1234567890-0987654321-1122334455-aabbccddeeff00112233445566778899",
     "aabbccddeeff00112233445566778899", REDACTED),
    ("google api key", "AIzaSyD3x4mPl3K3yV4lU3f0rT3st1ngOnLy123", "SyD3x4mPl3K3yV4lU3f0rT3st1ng", REDACTED),
    ("hugging face token", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "AbCdEfGhIjKlMnOpQrStUvWxYz", REDACTED),
    ("stripe key", "sk_live_51HxYzAbCdEfGhIjKlMnOpQr", "51HxYzAbCdEfGhIjKlMnOpQr", REDACTED),
    ("jwt",
     "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
     "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", REDACTED),
    ("libpq dsn", "host=db.internal port=5432 user=app password=Sup3rS3cret! dbname=prod", "Sup3rS3cret!",
     "host=db.internal port=5432 user=app password=*** dbname=prod"),
    ("odbc connection string", "Server=tcp:x.database.windows.net;Database=db;Uid=app;Pwd=Xy9#mK2$pL;",
     "Xy9#mK2$pL", "Pwd=***;"),
    ("azure storage connection string",
     "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==;EndpointSuffix=core.windows.net",
     "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA", "AccountKey=***;"),
    ("json with a secret key", '{"api_key": "k3y-V4lu3-9x8y7z", "model": "gpt-4o"}', "k3y-V4lu3-9x8y7z",
     '{"api_key": "***", "model": "gpt-4o"}'),
    ("header line", "X-Api-Key: 0123456789abcdef0123", "0123456789abcdef0123", "X-Api-Key: ***"),
    ("pem private key",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
     "-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun", REDACTED),
]  # fmt: skip
IDS = [row[0] for row in SECRETS]

LOOK_ALIKES = [
    "the sk- prefix marks OpenAI keys",
    "scikit-learn and task-force",
    "sk-learn-compatible-estimators-list",
    "https://api.openai.com/v1/chat/completions",
    "https://github.com/keel-dev/keel/commit/9fceb02d0ae598e95dc970b74767f19372d61af8",
    "9fceb02d0ae598e95dc970b74767f19372d61af8",
    "git@github.com:keel-dev/keel.git",
    "ssh://git@github.com/keel-dev/keel.git",
    "https://alice@example.com/profile",
    "https://host:8080/users/@alice",
    "https://example.com/docs/page?id=3&lang=en#section-2",
    "https://example.com/hooks/about",
    "550e8400-e29b-41d4-a716-446655440000",
    "max_tokens: 512, token_limit=100, key: value",
    "bearer bonds and basic information",
    "The key is under the mat; the token economy is booming.",
    "gpt-4o-mini-2024-07-18",
    "claude-3-5-sonnet-20241022",
    "ft:gpt-4o-mini:acme:support-v2:9AbCdEfG",
    "2024-01-15T12:30:00Z",
    "data:image/png;base64,iVBORw0KGgo",
    "password: null",
    "AKIA is how AWS key ids start",
    "ASIAN-FUSION-MENU-2024",
    "/home/alice/projects/keel/config/production.yaml",
]


@pytest.mark.parametrize(("name", "text", "secret", "shown"), SECRETS, ids=IDS)
def test_each_secret_is_masked_in_every_place_it_can_sit(name, text, secret, shown):
    assert secret in text  # the table is right
    alone = redact_value(text)
    assert secret not in alone and shown in alone, alone
    in_prose = redact_value(f"the app failed with {text} , then retried")
    assert secret not in in_prose and in_prose.startswith("the app failed with ") and in_prose.endswith("retried")
    config = {"service": {"endpoint": text, "retries": 3}, "targets": [text, "plain"], "headers": {"X-Custom": text}}
    redacted = redact_mapping(config)
    assert secret not in json.dumps(redacted), redacted
    assert redacted["service"]["retries"] == 3 and redacted["targets"][1] == "plain"
    as_json = json.dumps({"payload": text})
    assert secret not in redact_value(as_json) and json.loads(redact_value(as_json))  # still valid JSON


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_are_left_alone(text):
    assert redact_value(text) == text
    assert redact_mapping({"a": [text]}) == {"a": [text]}


@pytest.mark.parametrize(
    "key",
    ["password", "db_password", "passwd", "pwd", "secret", "client_secret", "token", "auth_token", "refresh_token",
     "api_key", "apikey", "openaiApiKey", "OPENAI_API_KEY", "access_key", "aws_secret_access_key", "private_key",
     "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key", "X-Goog-Api-Key",
     "Ocp-Apim-Subscription-Key", "X-Auth", "Proxy-Auth", "credentials", "dsn", "sentry_dsn", "webhook_url",
     "connection_string", "dbpassword", "secrets", "passphrase"],
)  # fmt: skip
def test_secret_key_names(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "token_limit", "tokens", "key", "monkey", "primary_key", "sort_key", "cache_key", "use_auth",
     "author", "keyboard", "model", "url", "database_url", "headers", "tokenizer", "auth"],
)  # fmt: skip
def test_names_that_are_not_secret(key):
    assert not is_secret_key(key)


def test_values_under_secret_keys_are_masked_whole_and_headers_too():
    headers = {
        "Authorization": "Bearer abc",
        "Cookie": "session=xyz",
        "X-Api-Key": "k",
        "User-Agent": "keel/1.0",
        "Content-Type": "application/json",
    }
    assert redact_mapping({"extra_headers": headers})["extra_headers"] == {
        "Authorization": REDACTED,
        "Cookie": REDACTED,
        "X-Api-Key": REDACTED,
        "User-Agent": "keel/1.0",
        "Content-Type": "application/json",
    }
    nested = {"credentials": {"user": "app", "ids": [1, 2], "enabled": True, "none": None, "empty": ""}}
    assert redact_mapping(nested) == {
        "credentials": {"user": REDACTED, "ids": [REDACTED, REDACTED], "enabled": True, "none": None, "empty": ""}
    }
    original = {"token": "t0k3n-v4lu3", "inner": {"url": "postgresql://a:b12345@h/d"}}
    copy = json.dumps(original)
    assert redact_mapping(original) == {"token": REDACTED, "inner": {"url": "postgresql://a:***@h/d"}}
    assert json.dumps(original) == copy  # the input is never modified


def test_extra_keys_per_call_and_registered_for_the_process():
    # "ledger_ref" is used by no other test: a workspace's [redaction] keys register process-wide
    data = {"ledger_ref": "R-1", "my_ledger_ref": "R-2", "ledger": "R-3", "LedgerRef": "R-4"}
    assert redact_mapping(data, extra_keys=["ledger_ref"]) == {
        "ledger_ref": REDACTED,
        "my_ledger_ref": REDACTED,
        "ledger": "R-3",
        "LedgerRef": REDACTED,
    }
    assert redact_mapping(data) == data
    assert not is_secret_key("zz_tenant_sigil")
    add_secret_keys(["zz-tenant-sigil"])  # a name no other test uses: registration is process-wide
    assert is_secret_key("zz_tenant_sigil") and is_secret_key("ZzTenantSigil") and is_secret_key("x_zz_tenant_sigil")
    assert redact_value("zz_tenant_sigil=abc123") == "zz_tenant_sigil=***"


def test_params_tags_and_argv():
    assert encode_param("api_key", "sk-whatever") == ("str", REDACTED)
    assert encode_param("db_password", 1234) == ("str", REDACTED)
    assert encode_param("use_token", True) == ("bool", "true")
    assert encode_param("db", "postgresql://app:pw12345@db/prod") == ("str", "postgresql://app:***@db/prod")
    vtype, text = encode_param(
        "client", {"headers": {"Authorization": "Bearer x"}, "hooks": ["https://hooks.slack.com/services/T/B/C"]}
    )
    assert vtype == "json" and decode_param(vtype, text) == {
        "headers": {"Authorization": REDACTED},
        "hooks": ["https://hooks.slack.com/services/***"],
    }
    assert encode_param("model", "gpt-4o-mini") == ("str", "gpt-4o-mini")
    assert redact_tag("deploy_token", "abc") == REDACTED and redact_tag("notify", "ok") == "ok"
    assert redact_tag("note", "see https://u:pw123456@h/x") == "see https://u:***@h/x"
    argv = ["train.py", "--api-key", "sk-x", "--password=hunter2", "--db", "postgresql://a:b1234567@h/d", "--lr", "0.1"]
    assert redact_argv(argv) == [
        "train.py", "--api-key", REDACTED, f"--password={REDACTED}", "--db", "postgresql://a:***@h/d", "--lr", "0.1",
    ]  # fmt: skip


def test_write_batches_are_redacted_whoever_built_them():
    RUN = "0" * 32
    batch = WriteBatch(
        params=[
            (RUN, "api_key", "str", "sk-raw-value", False),
            [RUN, "url", "str", "postgresql://app:pw12345@db/prod", False],
            (RUN, "cfg", "json", '{"password":"hunter2x","n":1}', False),
            (RUN, "n", "int", "5", False),
        ],
        tags=[(RUN, "webhook", "https://hooks.slack.com/services/T/B/C"), (RUN, "env", "prod")],
        run_ends=[(RUN, "failed", 1, "connect to postgresql://app:pw12345@db/prod failed")],
    )
    redact_batch(batch)
    assert batch.params[0][3] == REDACTED and batch.params[1][3] == "postgresql://app:***@db/prod"
    assert json.loads(batch.params[2][3]) == {"password": REDACTED, "n": 1} and batch.params[3][3] == "5"
    assert batch.tags == [(RUN, "webhook", REDACTED), (RUN, "env", "prod")]
    assert batch.run_ends[0][3] == "connect to postgresql://app:***@db/prod failed"
    batch.validate()


def test_config_snapshots_redact_values_and_keep_secret_tags():
    text = (
        "database_url: postgresql://app:Pg-Passw0rd-77@db/prod\n"
        "headers:\n  Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXZhbHVl\n"
        "alerts:\n  slack: https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX\n"
        "sentry:\n  url: https://0123456789abcdef0123456789abcdef@o0.ingest.sentry.io/0\n"
        "tagged: !secret plain-looking-value\n"
        "llm:\n  api_key: sk-abcdef\n  model: gpt-4o\n"
    )
    resolved = resolve([parse_layer(text, "production.yaml")], {})
    assert resolved.data["database_url"] == "postgresql://app:Pg-Passw0rd-77@db/prod"  # the app gets the value
    shown = resolved.redacted()
    assert shown == {
        "database_url": "postgresql://app:***@db/prod",
        "headers": {"Authorization": REDACTED},
        "alerts": {"slack": "https://hooks.slack.com/services/***"},
        "sentry": {"url": "https://***@o0.ingest.sentry.io/0"},
        "tagged": REDACTED,
        "llm": {"api_key": REDACTED, "model": "gpt-4o"},
    }
    assert dict((p, v) for p, v, _ in resolved.explain())["database_url"] == "postgresql://app:***@db/prod"
    assert isinstance(resolved.layers[0], Layer)


def test_conversation_records_lose_their_secrets_with_or_without_the_builtin_redactor():
    record = {
        "conversation_id": "c-1",
        "messages": [
            {"role": "user", "content": "my key is sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12 and mail is a@b.io"},
            {"role": "assistant", "content": [{"type": "text", "text": "use postgresql://u:pw123456@h/d"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"arguments": '{"token": "t0k3n-v4lu3"}'}]},
        ],
        "metadata": {"api_key": "plain", "callback": "https://hooks.slack.com/services/T/B/Cxx"},
        "user_feedback": {"thumb": -1, "comment": "leaked ghp_R4nD0mT0k3nV4lu3Xy2Zw9Qa8Sb7Tc6Ud5Ve4"},
    }
    secrets = redact_record_secrets(record)
    text = json.dumps(secrets)
    for secret in ("Ab12Cd34Ef56Gh78", "pw123456", "t0k3n-v4lu3", '"plain"', "/T/B/Cxx", "R4nD0mT0k3n"):
        assert secret not in text, secret
    assert "a@b.io" in text  # personal data is the opt-in redactor's business
    builtin = json.dumps(redact_record(record))
    assert "[EMAIL]" in builtin and "[API_KEY]" in builtin and "Ab12Cd34Ef56Gh78" not in builtin


def test_bounded_in_depth_size_and_time():
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    out = redact_mapping(deep)  # no RecursionError: past MAX_DEPTH the value is masked
    for _ in range(MAX_DEPTH):
        out = out["a"]
    assert out == REDACTED
    wide = redact_mapping(["x" * 10] * 300_000)
    assert len(wide) == 300_000 and wide[-1] == REDACTED and wide[0] == "x" * 10  # past the node budget: masked
    hostile = [
        "eyJ" * 100_000 + ".",
        "-----BEGIN PRIVATE KEY-----" * 5000,
        "a" * 1_000_000 + " password=abc",
        "https://" * 100_000,
        "pass" * 250_000 + "=x",
        "key= " * 100_000,
        "@:" * 200_000,
    ]
    for text in hostile:
        start = time.perf_counter()
        redact_value(text)
        assert time.perf_counter() - start < 5, text[:20]


def test_workspace_list_of_secret_keys(tmp_path, monkeypatch):
    (tmp_path / ".keel").mkdir()
    config = tmp_path / ".keel" / "config.toml"
    config.write_text('[store]\ndatabase = "keel.db"\n\n[redaction]\nkeys = ["zz_wsref", "X-Zz-Sigil"]\n')
    assert workspace_keys(tmp_path) == ["zz_wsref", "X-Zz-Sigil"]
    assert not is_secret_key("zz_wsref")
    use_workspace_keys(tmp_path)
    assert is_secret_key("zz_wsref") and is_secret_key("x-zz-sigil")
    monkeypatch.setenv("KEEL_REDACT_KEYS", "zz_envref, zz_other")
    use_workspace_keys(None)
    assert is_secret_key("zz_envref") and is_secret_key("zz_other")
    config.write_text('[redaction]\nkeys = "zz_wsref"\n')
    with pytest.raises(InvalidInput, match=r"\[redaction\] keys"):
        workspace_keys(tmp_path)
    assert workspace_keys(tmp_path / "nowhere") == []
