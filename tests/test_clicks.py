import re
import time

import pytest

import clicks

NOW = 1_760_000_000.0


def test_tokens_fit_a_start_parameter_and_verify() -> None:
    token = clicks.new_token(NOW)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token) and len(token) == 30
    assert clicks.verify_token(token, NOW + 3600)
    assert clicks.new_token(NOW) != token  # opaque and unique per click


def test_tokens_expire_after_seven_days() -> None:
    token = clicks.new_token(NOW)
    assert clicks.verify_token(token, NOW + clicks.TTL_SECONDS - 1)
    assert not clicks.verify_token(token, NOW + clicks.TTL_SECONDS + 1)


@pytest.mark.parametrize("mutate", [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), lambda t: "x" + t[1:]])
def test_forged_or_tampered_tokens_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    token = clicks.new_token(NOW)
    assert not clicks.verify_token(mutate(token), NOW)


@pytest.mark.parametrize("garbage", ["", "promo", "a" * 30, "a" * 64, "ab/cd", "x" * 29])
def test_other_start_parameters_are_not_tokens(garbage: str) -> None:
    assert not clicks.verify_token(garbage, NOW)


def test_a_click_captures_fbclid_utms_cookies_ip_and_user_agent() -> None:
    query = "fbclid=IwAR2xYz-Abc_123&utm_source=facebook&utm_campaign=Black%20Friday&utm_content=ad%201&x=1"
    click = clicks.capture("demo", query, cookie_header="a=b; _fbp=fb.1.1700000000000.123456789; c=d",
                           peer="203.0.113.9", user_agent="Mozilla/5.0 (iPhone)", now=NOW,
                           source_url="https://grim.example/r/demo?" + query)  # fmt: skip
    assert click.fbclid == "IwAR2xYz-Abc_123"  # case kept, never altered
    assert click.fbc == f"fb.1.{int(NOW * 1000)}.IwAR2xYz-Abc_123"  # built from the click time in ms
    assert click.fbp == "fb.1.1700000000000.123456789"
    assert click.utm == {"utm_source": "facebook", "utm_campaign": "Black Friday", "utm_content": "ad 1"}
    assert click.ip == "203.0.113.9" and click.user_agent == "Mozilla/5.0 (iPhone)"
    assert click.at_ms == int(NOW * 1000) and clicks.verify_token(click.token, NOW)
    assert clicks.Click.from_doc(__import__("json").loads(click.to_json())) == click


def test_the_fbc_cookie_wins_over_one_built_from_fbclid() -> None:
    click = clicks.capture("demo", "fbclid=ABC", cookie_header="_fbc=fb.1.1690000000000.ABC", now=NOW)
    assert click.fbc == "fb.1.1690000000000.ABC"


@pytest.mark.parametrize(
    "query, cookie",
    [
        ("fbclid=has%20space&utm_source=" + "x" * 500, "_fbc=nonsense; _fbp=also-nonsense"),
        ("%zz=%%&utm_=1&UTM_SOURCE=caps&fbclid=", ""),
        ("&&&==&", "_fbp"),
    ],
)
def test_bad_parameters_are_left_out_and_never_an_error(query: str, cookie: str) -> None:
    click = clicks.capture("demo", query, cookie_header=cookie, peer="not-an-ip", now=NOW)
    assert click.fbclid is None and click.fbc is None and click.fbp is None and click.ip is None
    assert all(len(v) <= clicks.UTM_VALUE_MAX for v in click.utm.values())
    assert set(click.utm) <= {"utm_source"}


def test_at_most_ten_utms_are_kept() -> None:
    query = "&".join(f"utm_k{i}=v{i}" for i in range(30))
    assert len(clicks.capture("demo", query, now=NOW).utm) == clicks.UTM_MAX


def test_x_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    xff = "198.51.100.7, 10.0.0.5"
    assert clicks.client_ip("203.0.113.9", xff, "") == "203.0.113.9"  # no trusted proxies: the peer
    assert clicks.client_ip("203.0.113.9", xff, "10.0.0.0/8") == "203.0.113.9"  # peer is no proxy
    assert clicks.client_ip("10.0.0.2", xff, "10.0.0.0/8") == "198.51.100.7"  # through two of ours
    assert clicks.client_ip("10.0.0.2", "1.1.1.1, 198.51.100.7", "10.0.0.0/8") == "198.51.100.7"  # spoofed left part
    assert clicks.client_ip("10.0.0.2", "garbage, 198.51.100.7", "10.0.0.0/8") == "198.51.100.7"
    assert clicks.client_ip("10.0.0.2", "198.51.100.7, garbage", "10.0.0.0/8") == "10.0.0.2"
    assert clicks.client_ip("::1", "2001:db8::1", "::1") == "2001:db8::1"


def test_a_bad_trusted_proxies_setting_is_named() -> None:
    with pytest.raises(SystemExit, match="TRUSTED_PROXIES: 'nope'"):
        clicks.client_ip("10.0.0.1", "1.2.3.4", "10.0.0.0/8,nope")


def test_a_click_never_prints_personal_data() -> None:
    click = clicks.capture("demo", "fbclid=ABC", peer="203.0.113.9", user_agent="UA-secret", now=NOW)
    assert "203.0.113.9" not in repr(click) and "UA-secret" not in repr(click)


def test_load_finds_only_valid_tokens_of_the_same_bot(redis_client) -> None:  # type: ignore[no-untyped-def]
    click = clicks.capture("demo", "fbclid=ABC", now=time.time())
    redis_client.set(clicks.key(click.token), click.to_json())
    assert clicks.load(redis_client, "demo", click.token) == click
    assert clicks.load(redis_client, "other", click.token) is None
    assert clicks.load(redis_client, "demo", clicks.new_token()) is None  # valid token, nothing stored
    redis_client.set(clicks.key("x" * 30), click.to_json())
    assert clicks.load(redis_client, "demo", "x" * 30) is None  # stored, but not a token we issued


def test_facebooks_in_app_browser_is_a_buyer_and_its_crawler_is_not() -> None:
    in_app = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Mobile/15E148 [FBAN/FBIOS;FBAV/442.0.0.34.111;FBBV/553402838;FBDV/iPhone14,5;FBMD/iPhone]")  # fmt: skip
    assert not clicks.is_crawler(in_app) and not clicks.is_crawler(None) and not clicks.is_crawler("")
    assert clicks.is_crawler("facebookexternalhit/1.1") and clicks.is_crawler("meta-externalagent/1.1")
