"""Flickr-Face downloader (pretrain/curate/flickr.py) against a local Flickr-like server."""
import hashlib
import io
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from pretrain.curate import flickr
from pretrain.curate.fetch import Fetcher, FetchError, RateLimiter, redact
from pretrain.curate.tags import FLICKR_FACE_TAGS, LICENSE_PRESETS, parse_licenses

KEY = "s3cretKEY0123abcd"


def _image_bytes(seed, fmt):
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def photo(pid, lic, **kw):
    """A search result as flickr.photos.search returns it in JSON (extras license, owner_name, url_*)."""
    return {"id": pid, "owner": "12345678@N00", "secret": "abcdef0123", "server": "65535", "farm": 66,
            "title": "t", "ispublic": 1, "isfriend": 0, "isfamily": 0, "license": lic, "ownername": "someone", **kw}


def default_content(b):
    blobs = {f"/img/{i}.jpg": _image_bytes(i, "PNG" if i == 1004 else "JPEG") for i in (1001, 1004, 1006, 1010)}
    blobs["/img/page.html"] = b"<html>not an image</html>"
    catalogue = {
        "face": [photo("1001", "4", url_l=f"{b}/img/1001.jpg", height_l="24", width_l="32"),
                 photo("1002", "0", url_l=f"{b}/img/1002.jpg"),           # all rights reserved
                 photo("1003", 9, url_l=f"{b}/img/fail.jpg"),             # always HTTP 500
                 photo("1004", "5", url_c=f"{b}/img/1004.jpg"),           # only a url_c
                 photo("../../escape", "4", url_l=f"{b}/img/evil.jpg"),   # hostile id
                 photo("1006", "4", title="../../../escape", url_l=f"{b}/img/1006.jpg?x=/../../escape"),
                 photo("1007", "4", url_l="file:///etc/passwd"),
                 photo("1008", "4", url_l="http://evil.example.com/x.jpg"),
                 photo("1009", "4", url_l=f"{b}/img/page.html")],
        "groupphoto": [photo("1001", "4", url_l=f"{b}/img/1001.jpg"),     # also under another tag
                       photo("1010", "12", url_l=f"{b}/img/1010.jpg")],
    }
    return catalogue, blobs


class FlickrLike:
    """A tiny stand-in for api.flickr.com + its image hosts, in the documented JSON format."""

    def __init__(self, content=None):
        """content(base_url) -> (catalogue {tag: [photo dicts]}, blobs {path: bytes}); default: the
        hostile/failing catalogue of the downloader test."""
        self.hits, self.searches, self.lock = Counter(), [], threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.catalogue, self.blobs = (content or default_content)(self.base)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _handler(self):
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urlsplit(self.path)
                with site.lock:
                    site.hits[url.path] += 1
                if url.path == "/services/rest/":
                    return self._send(200, json.dumps(site.api(parse_qs(url.query))).encode())
                if url.path in site.blobs:
                    return self._send(200, site.blobs[url.path], "image/jpeg")
                self._send(500 if url.path == "/img/fail.jpg" else 404, b"error", "text/plain")
        return Handler

    def api(self, q):
        q = {k: v[0] for k, v in q.items()}
        if q.get("api_key") != KEY:
            return {"stat": "fail", "code": 100, "message": f"Invalid API Key ({q.get('api_key')})"}
        if q["method"] == "flickr.photos.licenses.getInfo":
            return {"licenses": {"license": [{"id": i, "name": f"licence {i}", "url": ""} for i in range(13)]},
                    "stat": "ok"}
        with self.lock:
            self.searches.append(q)
        photos, per, page = self.catalogue.get(q["tags"], []), int(q["per_page"]), int(q["page"])
        pages = -(-len(photos) // per)
        return {"photos": {"page": page, "pages": str(pages), "perpage": per, "total": str(len(photos)),
                           "photo": photos[(page - 1) * per: page * per]}, "stat": "ok"}


@pytest.fixture
def site():
    s = FlickrLike()
    yield s
    s.server.shutdown()
    s.server.server_close()


def _run(site, out, *extra):
    tags = out.parent / "tags.txt"
    tags.write_text("face\n# a comment\ngroup photo\n")
    flickr.main(["--tags", str(tags), "--out", str(out), "--api-base", f"{site.base}/services/rest/",
                 "--per-page", "2", "--workers", "2", "--retries", "2", "--backoff", "0.001",
                 "--api-interval", "0", "--download-interval", "0", *extra])


def test_download_paging_licence_failures_resume_and_hostile_entries(site, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    out = tmp_path / "flickr"
    _run(site, out, "--max-photos", "2")  # an "interrupted" first run: stops after 2 downloads
    first = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in first if r["status"] == "ok"] == ["1001", "1004"]
    assert site.hits["/img/fail.jpg"] == 3  # 1 try + 2 retries, then recorded as failed
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"id": "10')  # a record torn by a crash mid-write

    _run(site, out)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    status = {}
    for r in records:
        status[r["id"]] = r["status"]
    assert status == {"1001": "ok", "1002": "skipped", "1003": "failed", "1004": "ok", "../../escape": "rejected",
                      "1006": "ok", "1007": "rejected", "1008": "rejected", "1009": "failed", "1010": "ok"}
    # resume: the two photos of the first run are not fetched again; 1001 under a second tag neither
    assert site.hits["/img/1001.jpg"] == 1 and site.hits["/img/1004.jpg"] == 1
    assert site.hits["/img/fail.jpg"] == 6  # failed photos are tried again on a re-run
    assert site.hits["/img/1002.jpg"] == 0 and site.hits["/img/evil.jpg"] == 0  # never requested
    # paging: face has 9 photos at 2 per page = pages 1..5 (1-2 twice: first run stopped there)
    pages = [(q["tags"], q["page"]) for q in site.searches]
    assert pages[:2] == [("face", "1"), ("face", "2")]
    assert pages[2:] == [("face", str(p)) for p in range(1, 6)] + [("groupphoto", "1")]
    q = site.searches[0]
    assert q["license"] == "4,5,9,10,11,12" and q["format"] == "json" and q["nojsoncallback"] == "1"
    assert "url_l" in q["extras"].split(",") and "license" in q["extras"].split(",")
    # files: named from ids only, bytes match the recorded sha256, nothing outside images/
    ok = {r["id"]: r for r in records if r["status"] == "ok"}
    assert ok["1004"]["file"] == "images/04/1004.png" and ok["1006"]["file"] == "images/06/1006.jpg"
    for r in ok.values():
        data = (out / r["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"] == hashlib.sha256(site.blobs[urlsplit(r["url"]).path]).hexdigest()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(re.fullmatch(r"flickr/images/\d\d/\d+\.(jpg|png)", f) for f in files
               if f not in {"tags.txt", "flickr/manifest.jsonl", "flickr/search_state.jsonl", "flickr/summary.json"})
    assert not any("escape" in f for f in files)
    # a third run finds every query finished: no API search at all
    n = len(site.searches)
    _run(site, out)
    assert len(site.searches) == n
    # the key never reaches a file or the console
    text = capsys.readouterr()
    assert KEY not in text.out + text.err
    assert all(KEY.encode() not in p.read_bytes() for p in out.rglob("*") if p.is_file())


def test_bad_key_message_is_redacted(site, tmp_path, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", KEY + "x")
    with pytest.raises(SystemExit) as exc:
        _run(site, tmp_path / "o")
    assert "Flickr error 100" in str(exc.value) and KEY not in str(exc.value)
    monkeypatch.delenv("FLICKR_API_KEY")
    with pytest.raises(SystemExit, match="FLICKR_API_KEY"):
        _run(site, tmp_path / "o")


def test_backoff_rate_limit_and_redaction():
    now, slept = [0.0], []
    clock = lambda: now[0]
    def sleep(s):
        slept.append(round(s, 6))
        now[0] += s
    limiter = RateLimiter(0.5, clock=clock, sleep=sleep)
    for _ in range(3):
        limiter.wait()
    assert slept == [0.5, 0.5]
    slept.clear()
    f = Fetcher(RateLimiter(0, clock=clock, sleep=sleep), retries=3, backoff=0.25, sleep=sleep, timeout=1,
                secrets=("k3y",))
    with pytest.raises(FetchError, match="after 4 attempts"):
        f.get("http://127.0.0.1:9/x?api_key=k3y")  # port 9 (discard): connection refused
    assert slept == [0.25, 0.5, 1.0]
    with pytest.raises(FetchError, match="disallowed"):
        f.get("file:///etc/passwd")
    assert redact("a k3y b k3y", ["k3y"]) == "a *** b ***"


def test_tags_licences_and_windows():
    assert len(FLICKR_FACE_TAGS) == 100 == len(set(FLICKR_FACE_TAGS))
    assert FLICKR_FACE_TAGS[:3] == ("human", "people", "person") and FLICKR_FACE_TAGS[-1] == "crowds"
    assert parse_licenses("frl") == (4, 9) and parse_licenses("9, 4") == (4, 9)
    assert not set(LICENSE_PRESETS["cc-reuse"]) & {0, 1, 2, 3, 6, 7, 8}  # no NC / ND / unlicensed
    with pytest.raises(ValueError, match="unknown licence"):
        parse_licenses("4,99")
    assert flickr.normalise_tag("Group  Photo") == "groupphoto"
    assert flickr.date_windows("2020-01-01", "2020-01-03", 1) == [(1577836800, 1577923199), (1577923200, 1578009599)]
    assert flickr.photo_url({"id": "5", "server": "65535", "secret": "ab12cd34"}, ("l",)) == \
        "https://live.staticflickr.com/65535/5_ab12cd34_b.jpg"
    assert flickr.photo_url({"id": "5", "server": "../x", "secret": "ab12cd34"}, ("l",)) is None
    with pytest.raises(ValueError):
        flickr.photo_path(flickr.Path("/o"), "../1", ".jpg")
