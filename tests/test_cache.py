"""The control-side initrd listing cache: a cached listing gives the same verdict."""

from pathlib import Path

from facts import cache
from facts import parsers as p
from tests.planning import analyse

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
    cache.apply("web1", cache.load("web1"), full, lines(cached=False), "v1")
    stored = cache.load("web1")
    assert list(stored.listings) == [KEY] and "ext4" in stored.listings[KEY]["modules"]

    short = p.parse_snapshot(lines(cached=True))
    assert short.initrds["/boot/initrd.img-6.1.0-50-amd64"].modules == set()
    cache.apply("web1", stored, short, lines(cached=True), "v1")
    a, b = analyse(full), analyse(short)
    assert a.kernels[0].missing == b.kernels[0].missing and a.status == b.status
    assert b.kernels[0].lister.endswith("(cached)")


def test_cache_miss_is_an_error_not_a_clean_bill(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    short = p.parse_snapshot(lines(cached=True))
    cache.apply("web1", cache.HostCache(), short, lines(cached=True), "v1")
    info = analyse(short)
    assert "cache lost" in info.kernels[0].initrd_error and info.status == "drifted"


def test_cache_off(monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", "off")
    assert cache.cache_dir() is None and cache.load("web1") == cache.HostCache()


def with_fingerprint(fp: str) -> list[str]:
    """A full answer as gather.sh gives it: live values, the fingerprint, then the rest."""
    out = lines(cached=False)
    end = next(i for i, ln in enumerate(out) if ln.startswith("@@KVM ") and i > 0)
    live = [ln for ln in out[1:end] if not ln.startswith("tool ")]
    tools = [ln for ln in out[1:end] if ln.startswith("tool ")]
    return ["@@KVM meta", *live, f"@@KVM fingerprint {fp}", "@@KVM meta", *tools, *out[end:]]


def test_unchanged_answer_is_the_stored_copy_with_fresh_live_values(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    full = with_fingerprint("123-456")
    snap = p.parse_snapshot(full)
    assert snap.fingerprint == "123-456"
    cache.apply("web1", cache.HostCache(), snap, full, "v1")
    stored = cache.load("web1")
    assert cache.seen(stored, "v1") == "123-456"
    assert cache.seen(stored, "v2") == ""  # another gather script: never trust the copy

    answer = [
        "@@KVM meta",
        "uname 6.1.0-50-amd64",
        "uid 0",
        "bootfree 12345678",
        "bootmount rw",
        "@@KVM unchanged 123-456",
        "@@KVM end",
    ]
    expanded = cache.expand(stored, answer)
    again = p.parse_snapshot(expanded)
    assert again.meta["bootfree"] == "12345678" and again.complete
    assert analyse(again).kernels == analyse(snap).kernels
    assert analyse(again).status == analyse(snap).status


def test_untrustworthy_answers_are_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    no_fp = with_fingerprint("")  # coarse timestamps on the host
    cache.apply("web1", cache.HostCache(), p.parse_snapshot(no_fp), no_fp, "v1")
    assert cache.seen(cache.load("web1"), "v1") == ""
    cut = with_fingerprint("1-2")[:-1]  # no end marker: output cut short
    cache.apply("web1", cache.HostCache(), p.parse_snapshot(cut), cut, "v1")
    assert cache.seen(cache.load("web1"), "v1") == ""
    failed = [ln if not ln.startswith("@@KVM initrd ") else ln + "\n@@KVM listfail 1" for ln in with_fingerprint("3-4")]
    failed = "\n".join(failed).splitlines()
    cache.apply("web1", cache.HostCache(), p.parse_snapshot(failed), failed, "v1")
    assert cache.seen(cache.load("web1"), "v1") == ""


def test_unchanged_answer_with_another_fingerprint_is_not_expanded():
    stored = cache.HostCache({}, {"version": "v1", "fingerprint": "1-2", "lines": ["@@KVM end"]})
    answer = ["@@KVM meta", "uid 0", "@@KVM unchanged 9-9", "@@KVM end"]
    assert cache.expand(stored, answer) == answer


class FakeHost:
    """A pyinfra host as gather_state reaches it: a name and the KvmAnswer fact."""

    def __init__(self, name: str, answer: list[str]) -> None:
        self.name, self.answer, self.asked = name, answer, []

    def get_fact(self, cls, **kwargs):
        self.asked.append((cls.__name__, kwargs))
        return self.answer


def test_cache_belongs_to_the_host_gathered_from_whatever_host_is_in_context(tmp_path, monkeypatch):
    # Issue 13: the cache was keyed on the context host, so other_host.get_fact() used the wrong one.
    from pyinfra.context import ctx_host

    from facts.kvm_drivers import SCRIPT_VERSION, KvmAnswer, gather_state

    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    other = FakeHost("db1", with_fingerprint("7-8"))
    with ctx_host.use(FakeHost("web1", [])):  # the deploy is running for web1
        state = gather_state(other, ["virtio_blk"])
    assert state.distro.family == "debian" and state.errors == []
    assert cache.seen(cache.load("db1"), SCRIPT_VERSION) == "7-8" and cache.load("web1") == cache.HostCache()
    # next run: db1 is asked with db1's fingerprint and initrd keys
    gather_state(other, ["virtio_blk"])
    name, args = other.asked[-1]
    assert name == KvmAnswer.__name__ and args["seen"] == "7-8" and args["known"] == [KEY]


def test_the_fact_is_pure_command_in_state_out():
    from facts.kvm_drivers import KvmDrivers

    fact = KvmDrivers()
    before = dict(vars(fact))
    first = fact.command(["virtio_blk"]).get_raw_value()
    assert fact.command(["virtio_blk"]).get_raw_value() == first and vars(fact) == before
    out = lines(cached=False)
    assert fact.process(out) == fact.process(out) and vars(fact) == before
