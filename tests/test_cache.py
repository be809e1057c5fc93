"""The control-side initrd listing cache: a cached listing gives the same verdict."""

from pathlib import Path

from facts import cache
from facts import kvm_drivers as kd
from facts import parsers as p

FIX = Path(__file__).parent / "fixtures"
KEY = "/boot/initrd.img-6.1.0-50-amd64|6046887|1764199265|1764199265"


def lines(cached: bool) -> list[str]:
    out = []
    for line in (FIX / "gather-bookworm-itools.txt").read_text().splitlines():
        if line.startswith("@@KVM initrd "):
            out += [line, f"key {KEY}"] + (["cached"] if cached else [])
            skipping = cached
            continue
        if line.startswith("@@KVM "):
            skipping = False
        if not (cached and skipping):
            out.append(line)
    return out


def test_cached_listing_gives_the_same_analysis(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    full = p.parse_snapshot(lines(cached=False))
    cache.apply("web1", cache.load("web1"), full)
    stored = cache.load("web1")
    assert list(stored) == [KEY] and "ext4" in stored[KEY]["modules"]

    short = p.parse_snapshot(lines(cached=True))
    assert short.initrds["/boot/initrd.img-6.1.0-50-amd64"].modules == set()
    cache.apply("web1", stored, short)
    a, b = kd.analyse(full), kd.analyse(short)
    assert a["kernels"][0]["missing"] == b["kernels"][0]["missing"] and a["status"] == b["status"]
    assert b["kernels"][0]["lister"].endswith("(cached)")


def test_cache_miss_is_an_error_not_a_clean_bill(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    short = p.parse_snapshot(lines(cached=True))
    cache.apply("web1", {}, short)
    info = kd.analyse(short)
    assert "cache lost" in info["kernels"][0]["initrd_error"] and info["status"] == "drifted"


def test_cache_off(monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", "off")
    assert cache.cache_dir() is None and cache.load("web1") == {}
