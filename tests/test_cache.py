"""The control-side initrd listing cache: a cached listing gives the same verdict."""

import logging
import os
from pathlib import Path

import pytest

from kvm_drivers import report
from kvm_drivers.facts import cache
from kvm_drivers.facts import kvm_drivers as kd
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.operations.plan import plan

FIX = Path(__file__).parent / "fixtures"
KEY = "/boot/initrd.img-6.1.0-50-amd64|6046887|1764199265|1764199265"


# What gather.sh now says after the listing of that initrd (recorded before it read an image's own
# files): its three modprobe.d files (Debian's aliases, fbdev-blacklist and systemd) name no virtio
# module, so nothing but the count of files read.
CONF = ["confread 3"]


def lines(cached: bool, conf: list[str] | None = None) -> list[str]:
    out = []
    inside = False
    for line in (FIX / "gather-bookworm-itools.txt").read_text().splitlines():
        if line.startswith("@@KVM initrd "):
            out += [line, f"key {KEY}"] + (["cached"] if cached else [])
            inside = True
            continue
        if line.startswith("@@KVM ") and inside:
            out += [] if cached else (CONF if conf is None else conf)
            inside = False
        if not (cached and inside) and not line.startswith(("confread ", "conferror ")):  # given by conf
            out.append(line)
    return out


def read(name: str, answer: list[str]):
    """The state of one answer, through the host's cache as the deploy and the check read it."""
    return kd.read_answer(answer, cache.load(name), name)


def test_cached_listing_gives_the_same_analysis(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    full = read("web1", lines(cached=False))
    stored = cache.load("web1")
    assert list(stored.listings) == [KEY] and "ext4" in stored.listings[KEY]["modules"]
    short = read("web1", lines(cached=True))  # the host did not list the initrd again
    a, b = plan(full), plan(short)
    assert a.kernels[0].missing == b.kernels[0].missing and a.status == b.status == "drifted"
    assert b.kernels[0].lister.endswith("(cached)")


def test_cache_miss_is_an_error_not_a_clean_bill(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    info = plan(read("web1", lines(cached=True)))  # "cached", but we hold no listing
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


LIVE = ["@@KVM meta", "uname 6.18.44-lab", "uid 0", "bootfree 12345678", "bootmount rw"]


def test_unchanged_answer_is_the_stored_state_with_fresh_live_values(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    first = read("web1", with_fingerprint("123-456"))
    stored = cache.load("web1")
    assert cache.seen(stored, kd.CACHE_VERSION) == "123-456"
    assert cache.seen(stored, "another-version") == ""  # other code: never trust the copy
    again = read("web1", [*LIVE, "@@KVM unchanged 123-456", "@@KVM end"])
    assert again.boot_free_kib == 12345678 and again.running_kernel == "6.18.44-lab"
    assert again.kernels == first.kernels and again.declared == first.declared
    assert plan(again).status == plan(first).status == "drifted"
    assert report.host_row("web1", plan(again))["running_kernel"] == "6.18.44-lab (not installed)"


def test_unchanged_answer_with_bad_live_values_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    read("web1", with_fingerprint("123-456"))
    bad = ["@@KVM meta", "uname 6.1.0-50-amd64", "bootfree lots", "@@KVM unchanged 123-456", "@@KVM end"]
    assert plan(read("web1", bad)).status == "error"


def test_untrustworthy_answers_are_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    read("web1", with_fingerprint(""))  # coarse timestamps on the host
    assert cache.seen(cache.load("web1"), kd.CACHE_VERSION) == ""
    read("web1", with_fingerprint("1-2")[:-1])  # no end marker: output cut short
    assert cache.seen(cache.load("web1"), kd.CACHE_VERSION) == ""
    failed = [ln if not ln.startswith("@@KVM initrd ") else ln + "\n@@KVM listfail 1" for ln in with_fingerprint("3-4")]
    read("web1", "\n".join(failed).splitlines())
    assert cache.seen(cache.load("web1"), kd.CACHE_VERSION) == ""


def test_unchanged_answer_that_is_not_ours_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    read("web1", with_fingerprint("1-2"))
    for answer in ([*LIVE, "@@KVM unchanged 9-9", "@@KVM end"], [*LIVE, "@@KVM unchanged 1-2"]):
        info = plan(read("web1", answer))  # another fingerprint; or cut short after "unchanged"
        assert info.status == "error", answer


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

    from kvm_drivers.facts.kvm_drivers import CACHE_VERSION, KvmAnswer, gather_state

    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    other = FakeHost("db1", with_fingerprint("7-8"))
    with ctx_host.use(FakeHost("web1", [])):  # the deploy is running for web1
        state = gather_state(other, ["virtio_blk"])
    assert state.distro.family == "debian" and state.errors == []
    assert cache.seen(cache.load("db1"), CACHE_VERSION) == "7-8" and cache.load("web1") == cache.HostCache()
    # next run: db1 is asked with db1's fingerprint and initrd keys
    gather_state(other, ["virtio_blk"])
    name, args = other.asked[-1]
    watch = cache.load("db1").snapshot["watch"]  # the initrds grub.cfg names, as written and under /boot
    assert "/boot/initrd.img-6.1.0-50-amd64" in watch and "/boot/boot/initrd.img-6.1.0-50-amd64" in watch
    assert name == KvmAnswer.__name__ and args["seen"] == "7-8" and args["known"] == [KEY, *watch]


def test_the_fact_is_pure_command_in_state_out():
    from kvm_drivers.facts.kvm_drivers import KvmDrivers

    fact = KvmDrivers()
    before = dict(vars(fact))
    first = fact.command(["virtio_blk"]).get_raw_value()
    assert fact.command(["virtio_blk"]).get_raw_value() == first and vars(fact) == before
    out = lines(cached=False)
    assert fact.process(out) == fact.process(out) and vars(fact) == before


def test_watched_paths_read_back_are_only_plain_absolute_paths():
    # The cache file is input: a path sent to the host with the known keys must be one gather.sh
    # can only stat (it skips odd names too, and never expands patterns).
    odd = ["/boot/x;reboot", "boot/relative", "/boot/a b", "/boot/*", "/boot/$(id)", 5, None]
    cached = cache.HostCache(snapshot={"version": "v1", "fingerprint": "f", "watch": ["/boot/ok", *odd]},
                             state=object())  # type: ignore[arg-type]  # fmt: skip
    assert cache.watch(cached, "v1") == ["/boot/ok"]
    assert cache.watch(cached, "v2") == []  # made by other code: nothing of it is used


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user takes root")
def test_cache_not_ours_alone_is_ignored_with_one_warning(tmp_path, monkeypatch, caplog):
    # Issue 18: cache files were loaded without an owner check, so another local user sharing
    # KVM_DRIVERS_CACHE could plant a listing or a state. Now a file or directory that is not the
    # running user's alone is ignored (a cold gather: the host is asked for everything), with a
    # warning once per directory.
    from kvm_drivers.facts.kvm_drivers import CACHE_VERSION, gather_state

    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "_warned", set())
    caplog.set_level(logging.WARNING, logger="kvm_drivers.cache")
    host = FakeHost("db1", with_fingerprint("7-8"))
    gather_state(host, ["virtio_blk"])
    f = cache._file("db1")
    assert cache.seen(cache.load("db1"), CACHE_VERSION) == "7-8"  # ours alone: used

    def cold() -> bool:
        """The host is asked for a full answer: no fingerprint, no initrd key of ours sent."""
        gather_state(host, ["virtio_blk"])
        return host.asked[-1][1]["seen"] == "" and host.asked[-1][1]["known"] == []

    assert not cold()
    for plant in (lambda: os.chown(f, 4242, -1),  # planted by another user (a file of the right shape)
                  lambda: f.chmod(0o620)):  # ours, but the group may rewrite it  # fmt: skip
        plant()
        assert cache.load("db1") == cache.HostCache() and cold()
        # the full answer then replaced it with a file of ours alone, used from then on
        assert os.stat(f).st_uid == os.geteuid() and oct(f.stat().st_mode & 0o777) == "0o600"
        assert cache.seen(cache.load("db1"), CACHE_VERSION) == "7-8"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "owned by uid 4242" in warnings[0], warnings  # once per directory

    for change, expect in [(lambda: tmp_path.chmod(0o777), "writable by group or others (mode 0777)"),
                           (lambda: os.chown(tmp_path, 4242, -1), "owned by uid 4242")]:  # fmt: skip
        monkeypatch.setattr(cache, "_warned", set())
        caplog.clear()
        change()
        assert cache.load("db1") == cache.HostCache() and cold()
        assert [r.getMessage() for r in caplog.records if expect in r.getMessage()], caplog.records
        tmp_path.chmod(0o700)
        os.chown(tmp_path, os.geteuid(), -1)
    # a link in our directory to a file of ours elsewhere: not followed
    monkeypatch.setattr(cache, "_warned", set())
    real = tmp_path.parent / "elsewhere.json"
    real.write_text(f.read_text())
    f.unlink()
    f.symlink_to(real)
    assert cache.load("db1") == cache.HostCache()
    assert "is a symbolic link" in caplog.records[-1].getMessage()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user takes root")
def test_cache_is_never_written_into_another_users_directory(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chown(shared, 4242, -1)
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(shared))
    monkeypatch.setattr(cache, "_warned", set())
    read("web1", with_fingerprint("1-2"))
    assert list(shared.iterdir()) == [] and oct(shared.stat().st_mode & 0o777) == "0o755"

def test_what_the_initrds_own_files_say_is_cached_with_its_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    conf = ["conf etc/modprobe.d/x.conf:2:virtio_blk:install virtio_blk /bin/false",
            "cmdline etc/cmdline.d/10.conf:rd.driver.blacklist=virtio_pci", "confread 2"]  # fmt: skip
    read("web1", lines(cached=False, conf=conf))
    entry = cache.load("web1").listings[KEY]
    assert entry["blocks"] == [{"file": "etc/modprobe.d/x.conf", "line": "2", "driver": "virtio_blk",
                                "text": "install virtio_blk /bin/false"}]  # fmt: skip
    assert entry["cmdline"] == [{"file": "etc/cmdline.d/10.conf", "word": "rd.driver.blacklist=virtio_pci"}]
    snap = parse_snapshot(lines(cached=True))
    cache.fill(cache.load("web1"), snap)
    (image,) = snap.initrds.values()
    assert image.blocks == entry["blocks"] and image.cmdline == entry["cmdline"]
    assert image.conf_read == 2 and image.conf_error == ""


def test_initrd_whose_files_were_not_read_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    read("web1", lines(cached=False, conf=["conferror no way to read files inside an initrd here"]))
    assert cache.load("web1").listings == {}  # listed again next time
    read("web1", lines(cached=False, conf=[]))  # an older script: the answer does not say
    assert cache.load("web1").listings == {}


def test_cached_initrd_files_of_the_wrong_shape_are_dropped(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("KVM_DRIVERS_CACHE", str(tmp_path))
    read("web1", lines(cached=False))
    path = next(tmp_path.iterdir())
    good = json.loads(path.read_text())
    for bad in ({"blocks": [{"file": "/etc/shadow", "line": "1", "driver": "x", "text": "y"}]},
                {"blocks": [{"file": "etc/modprobe.d/a.conf", "line": "1", "driver": "x", "text": "y\n"}]},
                {"cmdline": [{"file": "etc/cmdline", "word": "a b"}]}, {"conf_read": True}, {"conf_read": None},
                {"blocks": None}):  # fmt: skip
        data = json.loads(json.dumps(good))
        data["listings"][KEY].update(bad)
        path.write_text(json.dumps(data))
        assert cache.load("web1").listings == {}, bad
    # a listing cached by the previous version (no initrd files): listed again
    data = json.loads(json.dumps(good))
    for k in ("blocks", "cmdline", "conf_read"):
        del data["listings"][KEY][k]
    path.write_text(json.dumps(data))
    assert cache.load("web1").listings == {}
