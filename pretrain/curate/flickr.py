"""Flickr-Face downloader (paper §3.2, App. C): photos carrying any of the paper's 100 tags, with
a reuse licence, from the Flickr REST API (flickr.photos.search, JSON).

    export FLICKR_API_KEY=...            # read from the environment only; never logged or written
    python -m pretrain.curate.flickr --tags default --out data/flickr_raw [--licenses cc-reuse]
    python -m pretrain.curate.crop --images data/flickr_raw/images --out data/flickr_crops

Writes OUT/images/<last 2 digits of id>/<id>.<jpg|png|gif|webp> (names come from the numeric
photo id only: no remote string reaches a path), OUT/manifest.jsonl (per photo: id, status
ok/failed/skipped/rejected, url, licence, owner, sha256 of the bytes, file), OUT/search_state.jsonl
(finished tag/date-window queries) and OUT/summary.json. Re-running skips photos already "ok"
and queries already finished; failed photos are tried again.
Politeness: one API call per --api-interval s (Flickr allows 3600 calls/hour per key), a shared
--download-interval between image requests, retries with exponential backoff on 429/5xx and
network errors, image hosts restricted to Flickr's (plus --api-base's host, --allow-host).
Flickr returns at most the first 4,000 results of a query; --window-days splits each tag into
upload-date windows to go past that. Multi-word tags are sent in Flickr's normalised tag form
(lower case, no spaces: "group photo" -> "groupphoto"). --exclude FILE lists photo ids or owner
ids (one per line) never to download, for opt-out / takedown requests.
The deleted FRL scraper (anchors_frl_swav.md §1.9) used LICENSES=4,9 (--licenses frl).
"""
import argparse
import datetime as dt
import hashlib
import json
import os
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.files import write_json
from common.logger import JsonlWriter, log, progress
from pretrain.curate.fetch import Fetcher, FetchError, RateLimiter
from pretrain.curate.manifest import load_manifest
from pretrain.curate.tags import FLICKR_FACE_TAGS, LICENSES, parse_licenses, read_list

API_BASE = "https://api.flickr.com/services/rest/"
EXTRAS = "license,owner_name,url_l,url_c,url_z,url_o"
ID_RE = re.compile(r"[0-9]{1,24}")
SECRET_RE = re.compile(r"[0-9a-f]{4,40}")
FLICKR_HOSTS = ("staticflickr.com", "static.flickr.com")
MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"))


class FlickrError(Exception):
    """The API answered with stat != ok or with something that is not the documented JSON."""


def api_call(fetcher, api_base, api_key, method, **params) -> dict:
    query = urllib.parse.urlencode({"method": method, "api_key": api_key, "format": "json",
                                    "nojsoncallback": 1, **params})
    try:
        obj = json.loads(fetcher.get(f"{api_base}?{query}"))
    except ValueError:
        raise FlickrError(f"{method}: the response is not JSON") from None
    if not isinstance(obj, dict) or obj.get("stat") != "ok":
        message = obj.get("message") if isinstance(obj, dict) else None
        code = obj.get("code") if isinstance(obj, dict) else None
        raise FlickrError(f"{method}: Flickr error {code}: {fetcher.redact(message)}")
    return obj


def license_names(fetcher, api_base, api_key) -> dict:
    """{licence id: name} from flickr.photos.licenses.getInfo."""
    obj = api_call(fetcher, api_base, api_key, "flickr.photos.licenses.getInfo")
    try:
        return {int(x["id"]): str(x.get("name")) for x in obj["licenses"]["license"]}
    except (KeyError, TypeError, ValueError):
        raise FlickrError("flickr.photos.licenses.getInfo: unexpected response layout") from None


def search_page(fetcher, api_base, api_key, tag, page, *, licenses, per_page, window=None):
    """One page of flickr.photos.search -> (pages, photo dicts)."""
    params = dict(tags=normalise_tag(tag), tag_mode="any", license=",".join(map(str, licenses)),
                  extras=EXTRAS, per_page=per_page, page=page, media="photos", content_type=1,
                  privacy_filter=1, sort="date-posted-desc")
    if window is not None:
        params.update(min_upload_date=window[0], max_upload_date=window[1])
    photos = api_call(fetcher, api_base, api_key, "flickr.photos.search", **params).get("photos")
    if not isinstance(photos, dict) or not isinstance(photos.get("photo", []), list):
        raise FlickrError("flickr.photos.search: no photos.photo list in the response")
    try:
        pages = int(photos.get("pages", 0))  # Flickr sends pages/total as numbers or strings
    except (TypeError, ValueError):
        raise FlickrError(f"flickr.photos.search: bad pages value {photos.get('pages')!r}") from None
    return pages, [p for p in photos.get("photo", []) if isinstance(p, dict)]


def normalise_tag(tag) -> str:
    return re.sub(r"\s+", "", tag.lower())


def date_windows(start, end, days):
    """[(min_ts, max_ts)] unix-time windows of `days` days covering [start, end) (dates, UTC)."""
    if not days:
        return [None]
    if not (start and end):
        raise ValueError("--window-days needs --min-upload-date and --max-upload-date")
    t0, t1 = (int(dt.datetime.fromisoformat(d).replace(tzinfo=dt.timezone.utc).timestamp()) for d in (start, end))
    step = int(days) * 86400
    return [(t, min(t + step, t1) - 1) for t in range(t0, t1, step)]


def photo_url(photo, sizes):
    """The first url_<size> the API gave, else the 'b' (1024 px) URL built from validated parts."""
    for size in sizes:
        url = photo.get(f"url_{size}")
        if isinstance(url, str) and url:
            return url
    pid, server, secret = (str(photo.get(k, "")) for k in ("id", "server", "secret"))
    if ID_RE.fullmatch(pid) and server.isdigit() and SECRET_RE.fullmatch(secret):
        return f"https://live.staticflickr.com/{server}/{pid}_{secret}_b.jpg"
    return None


def image_ext(data: bytes):
    for magic, ext in MAGIC:
        if data.startswith(magic):
            return ext
    return ".webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else None


def photo_path(out: Path, pid: str, ext: str) -> Path:
    """OUT/images/<last two digits>/<id><ext>; `pid` must already be validated as digits."""
    if not ID_RE.fullmatch(pid):
        raise ValueError(f"photo id {pid!r} is not numeric")
    return out / "images" / pid[-2:].zfill(2) / f"{pid}{ext}"


def download_photo(fetcher, photo, out: Path, *, sizes, licenses, exclude=frozenset()) -> dict:
    """Fetch one search result; returns its manifest record (never raises for a bad photo)."""
    pid = photo.get("id")
    pid = pid if isinstance(pid, str) else str(pid) if isinstance(pid, int) else None
    base = {"id": pid, "owner": photo.get("owner"), "title": photo.get("title")}
    if pid is None or not ID_RE.fullmatch(pid):
        return {**base, "status": "rejected", "reason": "photo id is not numeric"}
    try:
        lic = int(photo.get("license"))
    except (TypeError, ValueError):
        lic = None
    base.update(license=lic, ownername=photo.get("ownername"),
                page_url=f"https://www.flickr.com/photos/{urllib.parse.quote(str(photo.get('owner', '')))}/{pid}")
    if lic not in licenses:
        return {**base, "status": "skipped", "reason": f"licence {lic} not in {list(licenses)}"}
    if pid in exclude or photo.get("owner") in exclude:
        return {**base, "status": "skipped", "reason": "excluded (opt-out list)"}
    url = photo_url(photo, sizes)
    if url is None or not fetcher.check(url):
        return {**base, "status": "rejected", "reason": "no usable image URL", "url": url}
    base["url"] = url
    try:
        data = fetcher.get(url)
    except FetchError as err:
        return {**base, "status": "failed", "error": str(err)}
    ext = image_ext(data)
    if ext is None:
        return {**base, "status": "failed", "error": "the response is not a JPEG/PNG/GIF/WebP image"}
    path = photo_path(out, pid, ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{pid}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return {**base, "status": "ok", "file": path.relative_to(out).as_posix(),
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def crawl(tags, out, api, images, api_base, api_key, *, licenses, sizes=("l", "c", "z", "o"),
          per_page=500, max_pages=0, windows=(None,), workers=4, max_photos=0, exclude=frozenset()):
    """Search every (tag, window), download new photos, append to the manifest; returns counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest, state_path = out / "manifest.jsonl", out / "search_state.jsonl"
    handled = {r["id"] for r in load_manifest(manifest) if r.get("status") == "ok"}
    done = {(r["tag"], json.dumps(r["window"])) for r in load_manifest(state_path)}
    writer, state = JsonlWriter(str(manifest)), JsonlWriter(str(state_path))
    counts = {"ok": 0, "failed": 0, "skipped": 0, "rejected": 0, "already_done": len(handled)}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for tag in progress(tags, desc="tags"):
            for window in windows:
                key = (tag, json.dumps(list(window) if window else None))
                if key in done:
                    continue
                page, pages = 1, 1
                while page <= pages and (not max_pages or page <= max_pages):
                    pages, photos = search_page(api, api_base, api_key, tag, page, licenses=licenses,
                                                per_page=per_page, window=window)
                    new = [p for p in photos if str(p.get("id")) not in handled]
                    handled.update(str(p.get("id")) for p in new)
                    log(f"tag {tag!r} page {page}/{pages}: {len(photos)} photos, {len(new)} new")
                    for rec in pool.map(lambda p: download_photo(images, p, out, sizes=sizes, licenses=licenses,
                                                                 exclude=exclude), new):
                        writer.write(rec)
                        counts[rec["status"]] += 1
                    if max_photos and counts["ok"] >= max_photos:
                        return counts  # a deliberate stop: this query stays unfinished
                    page += 1
                state.write({"tag": tag, "window": json.loads(key[1]), "pages": pages, "done": True})
    return counts


def host_filter(extra_hosts):
    """Allow Flickr's static image hosts and the given hosts (exact names)."""
    extra = {h.lower() for h in extra_hosts if h}

    def allowed(url):
        host = (urllib.parse.urlsplit(url).hostname or "").lower()
        return host in extra or any(host == h or host.endswith("." + h) for h in FLICKR_HOSTS)
    return allowed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tags", default="default", help="'default' (the paper's 100 tags) or a file, one tag a line")
    p.add_argument("--out", required=True)
    p.add_argument("--licenses", default="cc-reuse", help="preset (cc-reuse, frl, cc-all) or ids, e.g. 4,9")
    p.add_argument("--sizes", default="l,c,z,o", help="preferred url_<size> extras, in order")
    p.add_argument("--per-page", type=int, default=500, help="results per API page (Flickr max 500)")
    p.add_argument("--max-pages", type=int, default=0, help="pages per query (0: all)")
    p.add_argument("--max-photos", type=int, default=0, help="stop after this many new downloads (0: no cap)")
    p.add_argument("--min-upload-date"), p.add_argument("--max-upload-date")
    p.add_argument("--window-days", type=int, default=0, help="split each tag into upload-date windows")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--api-interval", type=float, default=1.0, help="seconds between API calls")
    p.add_argument("--download-interval", type=float, default=0.05, help="seconds between image requests")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay (s), doubled each retry")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--api-base", default=API_BASE)
    p.add_argument("--allow-host", action="append", default=[], help="extra image host to accept")
    p.add_argument("--exclude", help="file of photo ids / owner ids never to download (opt-out)")
    args = p.parse_args(argv)
    api_key = os.environ.get("FLICKR_API_KEY", "").strip()
    if not api_key:
        raise SystemExit("set FLICKR_API_KEY in the environment (https://www.flickr.com/services/apps/create/)")
    tags = FLICKR_FACE_TAGS if args.tags == "default" else read_list(args.tags, "tags")
    licenses = parse_licenses(args.licenses)
    exclude = frozenset(read_list(args.exclude, "ids")) if args.exclude else frozenset()
    common = dict(retries=args.retries, backoff=args.backoff, timeout=args.timeout, secrets=(api_key,))
    api_host = urllib.parse.urlsplit(args.api_base).hostname
    api = Fetcher(RateLimiter(args.api_interval), allowed=lambda url: url.startswith(args.api_base), **common)
    images = Fetcher(RateLimiter(args.download_interval), allowed=host_filter([api_host, *args.allow_host]),
                     **common)
    try:
        live = license_names(api, args.api_base, api_key)
        log("licences: " + "; ".join(f"{i} {live.get(i, 'NOT LISTED BY FLICKR')}" for i in licenses))
        counts = crawl(tags, args.out, api, images, args.api_base, api_key, licenses=licenses,
                       sizes=tuple(args.sizes.split(",")), per_page=args.per_page, max_pages=args.max_pages,
                       windows=date_windows(args.min_upload_date, args.max_upload_date, args.window_days),
                       workers=args.workers, max_photos=args.max_photos, exclude=exclude)
    except (FlickrError, FetchError) as err:
        raise SystemExit(f"flickr: {api.redact(err)}") from None
    counts["licenses"] = {i: LICENSES.get(i) for i in licenses}
    write_json(Path(args.out) / "summary.json", counts)
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
