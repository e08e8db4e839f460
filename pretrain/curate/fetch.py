"""Polite HTTP for the Flickr-Face downloader (paper App. C): a shared rate limit, retries with
exponential backoff, an allow-list for hosts (also checked on redirects), a size cap, and
redaction of secrets from every message. Standard library only."""
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
USER_AGENT = "facerep-curate/1.0 (+research dataset builder; polite, rate-limited)"


class FetchError(Exception):
    """A request that failed for good (after retries, or a permanent error). Message is redacted."""


def redact(text, secrets) -> str:
    text = str(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***").replace(urllib.parse.quote(secret, safe=""), "***")
    return text


class RateLimiter:
    """At most one `wait()` return per `min_interval` seconds, across threads."""

    def __init__(self, min_interval: float, clock=time.monotonic, sleep=time.sleep):
        self.min_interval, self.clock, self.sleep = float(min_interval), clock, sleep
        self._next = None
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            start = now if self._next is None else max(now, self._next)
            self._next = start + self.min_interval
        if start > now:
            self.sleep(start - now)


class Fetcher:
    """`get(url) -> bytes` with the rate limit, `retries` extra attempts on transient errors
    (connection errors, timeouts, HTTP 408/425/429/5xx) after backoff * 2**attempt seconds
    (or Retry-After when the server sends a number, capped at max_backoff)."""

    def __init__(self, limiter, *, retries=3, backoff=1.0, max_backoff=60.0, timeout=30.0,
                 max_bytes=50 << 20, allowed=None, secrets=(), sleep=time.sleep):
        self.limiter, self.retries, self.backoff, self.max_backoff = limiter, retries, backoff, max_backoff
        self.timeout, self.max_bytes, self.allowed = timeout, max_bytes, allowed or (lambda url: True)
        self.secrets, self.sleep = tuple(secrets), sleep
        fetcher = self

        class _Redirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):
                if not fetcher.check(newurl):
                    raise FetchError(f"redirect to a disallowed URL {fetcher.redact(newurl)}")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        self._opener = urllib.request.build_opener(_Redirects())

    def redact(self, text) -> str:
        return redact(text, self.secrets)

    def check(self, url) -> bool:
        """http(s) URLs on an allowed host only (never file:, ftp:, data:)."""
        parts = urllib.parse.urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and self.allowed(url)

    def get(self, url) -> bytes:
        if not self.check(url):
            raise FetchError(f"disallowed URL {self.redact(url)}")
        for attempt in range(self.retries + 1):
            self.limiter.wait()
            retry_after = None
            try:
                req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                with self._opener.open(req, timeout=self.timeout) as resp:
                    data = resp.read(self.max_bytes + 1)
                if len(data) > self.max_bytes:
                    raise FetchError(f"response over {self.max_bytes} bytes")
                return data
            except urllib.error.HTTPError as err:
                if err.code not in RETRY_STATUS:
                    raise FetchError(f"HTTP {err.code}") from None
                reason, retry_after = f"HTTP {err.code}", err.headers.get("Retry-After") if err.headers else None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                reason = self.redact(getattr(err, "reason", err))
            if attempt == self.retries:
                raise FetchError(f"{reason} after {self.retries + 1} attempts")
            delay = self.backoff * 2 ** attempt
            if retry_after is not None and retry_after.strip().isdigit():
                delay = max(delay, float(retry_after))
            self.sleep(min(delay, self.max_backoff))
