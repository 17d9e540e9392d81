"""Ad clicks: what `GET /r/{bot_id}` captures, the opaque token that carries it into `/start`, and
where it waits in Redis (7 days) until the buyer's /start comes.

The token is `base64url(seconds ‖ random ‖ HMAC)`: 30 characters of `A-Za-z0-9_-`, so a Telegram
start parameter (≤ 64) holds it. The HMAC (keyed with SECRET_KEY) means a token nobody issued is
refused without a Redis lookup, and the time inside means an expired one is refused even if Redis
still held it. Shared by the edge (which writes) and the workers (which read)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

import settings

TTL_SECONDS = 7 * 24 * 3600
KEY = "grimbots:click:{token}"
_SIG_BYTES = 8
_RANDOM_BYTES = 10
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{30}$")

# What a click may carry; anything else is dropped (and the click still redirects).
_FBCLID = re.compile(r"^[\x21-\x7e]{1,500}$")  # printable ASCII, no spaces; kept exactly as given
_FBC = re.compile(r"^fb\.\d\.\d{10,13}\.[\x21-\x7e]{1,500}$")
_FBP = re.compile(r"^fb\.\d\.\d{10,13}\.[\x21-\x7e]{1,100}$")
_UTM_KEY = re.compile(r"^(utm_[a-z0-9_]{1,32}|src|sck)$")  # src and sck: what Utmify tracks besides utm_*
_TTCLID = re.compile(r"^[\x21-\x7e]{1,500}$")  # TikTok's click id, kept exactly as given
_TTP = re.compile(r"^[\x21-\x7e]{1,200}$")
UTM_MAX = 10
UTM_VALUE_MAX = 200
USER_AGENT_MAX = 512
SOURCE_URL_MAX = 1000
# What one click may hold in Redis for 7 days: a flood is bounded by count (rate limits) and size.
MAX_CLICK_BYTES = 2048


# Link-preview fetchers and crawlers (Meta's own ad checker first among them) follow ad links too:
# they are sent on to the bot, but are not clicks (no token, no PageView).
_CRAWLER = re.compile(
    r"facebookexternalhit|facebookcatalog|meta-externalagent|facebot|telegrambot|whatsapp|twitterbot|slackbot"
    r"|discordbot|linkedinbot|googlebot|bingbot|applebot|crawler|spider|preview",
    re.IGNORECASE,
)


def is_crawler(user_agent: str | None) -> bool:
    return bool(user_agent) and _CRAWLER.search(user_agent or "") is not None


def _sign(body: bytes, key: str | None = None) -> bytes:
    secret = key if key is not None else settings.SECRET_KEY
    return hmac.new(secret.encode(), b"click:" + body, hashlib.sha256).digest()[:_SIG_BYTES]


def new_token(now: float | None = None) -> str:
    body = struct.pack(">I", int(now if now is not None else time.time())) + secrets.token_bytes(_RANDOM_BYTES)
    return base64.urlsafe_b64encode(body + _sign(body)).decode().rstrip("=")


def verify_token(token: str, now: float | None = None) -> bool:
    """True for a token this platform issued less than 7 days ago."""
    if not _TOKEN.match(token):
        return False
    raw = base64.urlsafe_b64decode(token + "==")
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:  # one spelling per token
        return False
    body, signature = raw[:-_SIG_BYTES], raw[-_SIG_BYTES:]
    keys = (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)  # tokens issued before a rotation still count
    if not any(hmac.compare_digest(signature, _sign(body, key)) for key in keys):
        return False
    (issued,) = struct.unpack(">I", body[:4])
    age = (now if now is not None else time.time()) - issued
    return -300 <= age <= TTL_SECONDS


@dataclass(frozen=True)
class Click:
    bot_id: str
    token: str
    at_ms: int  # when the click arrived, unix milliseconds
    fbclid: str | None = None
    fbc: str | None = None  # the _fbc cookie, else built from fbclid and the click time
    fbp: str | None = None
    ttclid: str | None = None  # TikTok: the ttclid query parameter and the _ttp cookie
    ttp: str | None = None
    utm: dict[str, str] = field(default_factory=dict)
    ip: str | None = None
    user_agent: str | None = None
    source_url: str | None = None  # the redirect URL as clicked (event_source_url)
    pool: str | None = None  # the redirect pool (GET /p/{pool_id}) that chose this bot

    def __repr__(self) -> str:  # IP and user agent are personal data: never in a log line
        return f"Click(bot_id={self.bot_id!r}, token={self.token!r})"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Click:
        return cls(
            bot_id=str(doc["bot_id"]),
            token=str(doc["token"]),
            at_ms=int(doc["at_ms"]),
            fbclid=doc.get("fbclid"),
            fbc=doc.get("fbc"),
            fbp=doc.get("fbp"),
            ttclid=doc.get("ttclid"),
            ttp=doc.get("ttp"),
            utm={str(k): str(v) for k, v in (doc.get("utm") or {}).items()},
            ip=doc.get("ip"),
            user_agent=doc.get("user_agent"),
            source_url=doc.get("source_url"),
            pool=doc.get("pool"),
        )


def fbc_from(fbclid: str, at_ms: int) -> str:
    """Meta's click id format: fb.1.{creation time in ms}.{fbclid}, the fbclid unaltered."""
    return f"fb.1.{at_ms}.{fbclid}"


def parse_cookies(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name in ("_fbc", "_fbp", "_ttp"):
            cookies[name] = value.strip().strip('"')
    return cookies


@cache
def _trusted(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for item in spec.split(","):
        if item.strip():
            try:
                nets.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise SystemExit(f"setting TRUSTED_PROXIES: {item.strip()!r} is not an address or network") from None
    return tuple(nets)


def _is_trusted(address: str, nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def _valid_ip(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


def client_ip(peer: str | None, forwarded_for: str | None, trusted_spec: str | None = None) -> str | None:
    """The buyer's address: the socket's peer, unless the peer is a trusted proxy; then the
    right-most X-Forwarded-For entry that is not itself a trusted proxy."""
    nets = _trusted(settings.TRUSTED_PROXIES if trusted_spec is None else trusted_spec)
    if peer is None or not forwarded_for or not _is_trusted(peer, nets):
        return _valid_ip(peer) if peer else None
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    candidate = peer
    for hop in reversed(hops):
        if _valid_ip(hop) is None:
            break  # garbage from the client: believe the last hop a trusted proxy vouched for
        candidate = hop
        if not _is_trusted(hop, nets):
            break
    return _valid_ip(candidate)


def capture(
    bot_id: str,
    query_string: str,
    *,
    cookie_header: str = "",
    peer: str | None = None,
    forwarded_for: str | None = None,
    user_agent: str | None = None,
    source_url: str | None = None,
    now: float | None = None,
    pool: str | None = None,
) -> Click:
    """A click from the raw request parts. Anything malformed is left out, never an error."""
    at = time.time() if now is None else now
    at_ms = int(at * 1000)
    fbclid: str | None = None
    ttclid: str | None = None
    utm: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=False):
        if name == "fbclid" and fbclid is None and _FBCLID.match(value):
            fbclid = value
        elif name == "ttclid" and ttclid is None and _TTCLID.match(value):
            ttclid = value
        elif _UTM_KEY.match(name) and name not in utm and len(utm) < UTM_MAX:
            utm[name] = value.strip()[:UTM_VALUE_MAX]
    cookies = parse_cookies(cookie_header)
    fbc = cookies.get("_fbc") if _FBC.match(cookies.get("_fbc", "")) else None
    if fbc is None and fbclid is not None:
        fbc = fbc_from(fbclid, at_ms)
    fbp = cookies.get("_fbp") if _FBP.match(cookies.get("_fbp", "")) else None
    ua = user_agent.strip()[:USER_AGENT_MAX] if user_agent and user_agent.strip() else None
    click = Click(
        bot_id=bot_id,
        token=new_token(at),
        at_ms=at_ms,
        fbclid=fbclid,
        fbc=fbc,
        fbp=fbp,
        ttclid=ttclid,
        ttp=cookies.get("_ttp") if _TTP.match(cookies.get("_ttp", "")) else None,
        utm=utm,
        ip=client_ip(peer, forwarded_for),
        user_agent=ua,
        source_url=source_url[:SOURCE_URL_MAX] if source_url else None,
        pool=pool,
    )
    return within_budget(click)


def within_budget(click: Click) -> Click:
    """A click as stored is at most MAX_CLICK_BYTES: utm values go first (the last ones), then the
    query of the source URL. What Meta matches on (fbclid, cookies, IP, user agent) always stays."""
    while len(click.to_json().encode()) > MAX_CLICK_BYTES:
        if click.utm:
            click = dataclasses.replace(click, utm=dict(list(click.utm.items())[:-1]))
        elif click.source_url and "?" in click.source_url:
            click = dataclasses.replace(click, source_url=click.source_url.split("?", 1)[0])
        else:
            break
    return click


# One round trip per click: the per-IP and per-bot limits (fixed windows), the memory ceiling
# (bytes of click data stored per day, summed over the days a click lives), then the click itself.
# KEYS: ip counter, bot counter, click key, byte counters (today first, then the 7 days before)
# ARGV: doc, ttl, ip limit, ip window s, bot limit, bot window s, ceiling in bytes (0: none)
# Returns "tracked", or why not.
STORE = """
local ip = redis.call('INCR', KEYS[1])
if ip == 1 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
if ip > tonumber(ARGV[3]) then return 'limited_ip' end
local bot = redis.call('INCR', KEYS[2])
if bot == 1 then redis.call('EXPIRE', KEYS[2], ARGV[6]) end
if bot > tonumber(ARGV[5]) then return 'limited_bot' end
local ceiling = tonumber(ARGV[7])
if ceiling > 0 then
  local used = 0
  for i = 4, #KEYS do used = used + tonumber(redis.call('GET', KEYS[i]) or '0') end
  if used + #ARGV[1] > ceiling then return 'memory_ceiling' end
  redis.call('INCRBY', KEYS[4], #ARGV[1])
  redis.call('EXPIRE', KEYS[4], 8 * 86400)
end
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2])
return 'tracked'
"""
IP_WINDOW_SECONDS = 60
BOT_WINDOW_SECONDS = 1


def store_keys(click: Click, now: float) -> list[str]:
    day = int(now // 86400)
    ip_window, bot_window = int(now // IP_WINDOW_SECONDS), int(now // BOT_WINDOW_SECONDS)
    return [
        f"grimbots:clicks:rate:ip:{click.ip or '-'}:{ip_window}",
        f"grimbots:clicks:rate:bot:{click.bot_id}:{bot_window}",
        key(click.token),
        *(f"grimbots:clicks:bytes:{day - i}" for i in range(8)),
    ]


def store_args(doc: str, *, per_ip: int, per_bot: int, ceiling_bytes: int) -> list[str | int]:
    return [doc, TTL_SECONDS, per_ip, IP_WINDOW_SECONDS + 1, per_bot, BOT_WINDOW_SECONDS + 1, ceiling_bytes]


def key(token: str) -> str:
    return KEY.format(token=token)


def load(client: Any, bot_id: str, token: str) -> Click | None:
    """The click behind a /start token of this bot, or None (unknown, expired, another bot's, or
    not a token at all: then it is just a plain /start)."""
    if not verify_token(token):
        return None
    raw = client.get(key(token))
    if raw is None:
        return None
    try:
        click = Click.from_doc(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        return None
    return click if click.bot_id == bot_id and click.token == token else None
