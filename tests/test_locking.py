"""The job lock (llamavid/locking.py) and what it guarantees to `encode` and `ask` under concurrency.

Real processes, real kills: a lock that only works inside one interpreter, or leaves a stale lock behind a
SIGKILL, or lets a waiter and a newcomer both in after the lock file was deleted, fails here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from media import make_video

from llamavid.core import locking
from llamavid.core.errors import LlamaVidError
from llamavid.core.locking import LockError, LockTimeoutError, exclusive, lock_path_for
from llamavid.features.encode import EncodeOptions, check_output, content_hash, encode_file, is_up_to_date
from llamavid.features.vidtok import open_vidtok, partial_dir_for

POSIX = sys.platform != "win32"

# A child that takes the lock, says so, and holds it until its stdin closes (or it is killed).
HOLDER = """
import sys
from llamavid.core.locking import exclusive
with exclusive(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""

# A child that increments a counter file under the lock, with a pause between read and write.
COUNTER = """
import sys, time
from pathlib import Path
from llamavid.core.locking import exclusive
target, counter, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for _ in range(n):
    with exclusive(target):
        value = int(counter.read_text())
        time.sleep(0.0005)
        counter.write_text(str(value + 1))
"""


def child_env() -> dict:
    """The child imports the llamavid under test, wherever this suite runs from."""
    root = str(Path(__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def start_holder(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=child_env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def waiting_message(target: Path) -> str:
    return f"another llamavid process is writing {target}; waiting"


# ---------------------------------------------------------------------------------------------------------
# the lock itself


def test_lock_file_lives_beside_the_target_and_is_gone_after_release(tmp_path):
    target = tmp_path / "clip.vidtok"
    assert lock_path_for(target) == tmp_path / ".clip.vidtok.lock"
    with exclusive(target):
        assert lock_path_for(target).is_file()
        with exclusive(str(target)):  # re-entrant in one thread (str and Path name the same lock)
            assert lock_path_for(target).is_file()
        assert lock_path_for(target).is_file()  # the inner block did not release the outer one
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_a_clear_error(tmp_path):
    target = tmp_path / "nope" / "clip.vidtok"
    with pytest.raises(LockError) as err:
        with exclusive(target):
            pass
    assert isinstance(err.value, LlamaVidError)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "nope") in message and "lock file" in message


@pytest.mark.slow
@pytest.mark.skipif(not POSIX, reason="uses a holder subprocess and SIGKILL")
def test_another_process_holding_the_lock_makes_us_wait_then_time_out(tmp_path):
    target = tmp_path / "clip.vidtok"
    holder = start_holder(target)
    try:
        told: list[str] = []
        began = time.monotonic()
        with pytest.raises(LockTimeoutError) as err:
            with exclusive(target, on_wait=told.append, timeout=0.3):
                pytest.fail("got a lock that another process holds")
        waited = time.monotonic() - began
        assert told == [waiting_message(target)]  # told once, with the exact wording
        assert 0.3 <= waited < 3, waited
        assert "\n" not in str(err.value) and str(target) in str(err.value) and "0.3 s" in str(err.value)

        got: list[float] = []
        waiting = threading.Event()

        def on_wait(message: str) -> None:
            told.append(message)
            waiting.set()

        def release_once_waiting() -> None:
            # Let go only once we are seen waiting (not after a fixed sleep that assumes we got there by then),
            # and no sooner than 0.3 s after we began, so the wait measured below is at least that long.
            if waiting.wait(60):
                time.sleep(max(0.0, began + 0.3 - time.monotonic()))
            holder.stdin.close()

        told.clear()
        began = time.monotonic()
        releaser = threading.Thread(target=release_once_waiting)
        releaser.start()
        with exclusive(target, on_wait=on_wait):  # no timeout: waits until the holder lets go
            got.append(time.monotonic() - began)
        waiting.set()  # (were we let in without waiting, the assertion below says so at once)
        releaser.join()
        assert told == [waiting_message(target)] and got[0] >= 0.25
        assert holder.wait(timeout=10) == 0
    finally:
        holder.kill()
        holder.wait()
    assert not lock_path_for(target).exists()


@pytest.mark.slow
@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_a_holder_killed_with_sigkill_leaves_no_lock_behind(tmp_path):
    target = tmp_path / "clip.vidtok"
    holder = start_holder(target)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path_for(target).is_file()  # the killed holder could not delete its file...
    told: list[str] = []
    with exclusive(target, on_wait=told.append, timeout=5):  # ...but the OS released its lock at once
        pass
    assert told == [] and not lock_path_for(target).exists()


@pytest.mark.slow
@pytest.mark.skipif(not POSIX, reason="subprocesses started together")
def test_processes_exclude_each_other_even_while_the_lock_file_is_deleted_and_recreated(tmp_path):
    """Four processes x 60 read-pause-write increments: any overlap loses an update.

    Every release deletes the lock file, so waiters keep finding that the file they locked is gone; a
    lock that did not re-check the file's identity would let a waiter and a newcomer in together.
    """
    target, counter = tmp_path / "clip.vidtok", tmp_path / "counter"
    counter.write_text("0")
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER, str(target), str(counter), "60"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
             for _ in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:  # start together
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.wait(timeout=60) == 0
    assert int(counter.read_text()) == 240
    assert not lock_path_for(target).exists()


def test_threads_exclude_each_other_and_time_out(tmp_path):
    target = tmp_path / "clip.vidtok"
    value = [0]
    inside = [0]
    overlaps = [0]

    def work() -> None:
        for _ in range(40):
            with exclusive(target):
                inside[0] += 1
                overlaps[0] += inside[0] > 1
                v = value[0]
                time.sleep(0.0002)  # let the other threads run
                value[0] = v + 1
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert value[0] == 160 and overlaps[0] == 0

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with exclusive(target):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    told: list[str] = []
    try:
        with pytest.raises(LockTimeoutError, match="0.2 s"):
            with exclusive(target, on_wait=told.append, timeout=0.2):
                pytest.fail("got a lock that another thread holds")
        assert told == [waiting_message(target)]
    finally:
        release.set()
        holder.join()
    with exclusive(target, timeout=1):
        pass
    assert locking._registry == {}  # nothing kept per target once no one uses it


# ---------------------------------------------------------------------------------------------------------
# encode under the lock


@pytest.fixture(scope="module")
def encoder(tiny):
    import llamavid

    return llamavid.load_vision_encoder(vision_tower=tiny.vision_path, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("lockmedia") / "clip.mp4", seconds=12, fps=10)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, encoder, clip) -> Path:
    """The clip encoded once, uninterrupted and alone, as the CLI does it (fps 10, batches of 8)."""
    out = tmp_path_factory.mktemp("lockref") / "clip.vidtok"
    assert encode_file(encoder, clip, out, EncodeOptions(fps=10)).status == "encoded"
    return out


def same_features(a: Path, b: Path) -> bool:
    with open_vidtok(a) as x, open_vidtok(b) as y:
        return np.array_equal(x.timestamps, y.timestamps) and torch.equal(
            x.features(dtype=torch.float16), y.features(dtype=torch.float16))


def encode_cmd(tiny, clip: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "llamavid_cli", "encode", str(clip), "--vision-tower", str(tiny.vision_path),
            "--dtype", "float32", "--fps", "10", "-o", str(out), "--json"]  # float32 as the in-process reference


@pytest.mark.slow
@pytest.mark.skipif(not POSIX, reason="two CLI processes at once")
def test_two_encodes_of_the_same_output_at_once_both_succeed(tmp_path, tiny, clip, reference):
    out = tmp_path / "clip.vidtok"
    env = dict(child_env(), LLAMAVID_CACHE=str(tmp_path / "cache"))
    procs = [subprocess.Popen(encode_cmd(tiny, clip, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    statuses = sorted(json.loads(stdout)["status"] for stdout, _ in results)
    assert statuses == ["encoded", "skipped"]  # one did the work, the other reused it
    with open_vidtok(out) as vt:
        vt.verify()
    assert same_features(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.vidtok"]  # no lock, no partial state


@pytest.mark.slow
@pytest.mark.skipif(not POSIX, reason="a CLI subprocess")
def test_a_waiting_encode_says_so_once_and_then_reuses_the_result(tmp_path, tiny, encoder, clip, reference):
    out = tmp_path / "clip.vidtok"
    env = dict(child_env(), LLAMAVID_CACHE=str(tmp_path / "cache"))
    with exclusive(out):  # this test process is "the other run"
        proc = subprocess.Popen(encode_cmd(tiny, clip, out)[:-1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        first = proc.stderr.readline()
        assert first == f"llamavid: {waiting_message(out)}\n"
        assert proc.poll() is None  # still waiting while we hold the lock
        done = encode_file(encoder, clip, out, EncodeOptions(fps=10))  # re-entrant: we hold it already
        assert done.status == "encoded"
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, rest
    assert rest == f"{clip}: up to date ({out})\n"  # and nothing else: one waiting line in all
    assert same_features(out, reference)


@pytest.mark.slow
def test_a_damaged_output_is_never_up_to_date_and_is_encoded_again(tmp_path, encoder, clip, reference):
    out = tmp_path / "clip.vidtok"
    out.write_bytes(reference.read_bytes())
    args = (content_hash(clip), encoder.identity(), 10.0, "float16")
    assert is_up_to_date(out, *args)
    data = bytearray(out.read_bytes())
    data[-3] ^= 0x10  # one bit of the last frame's features
    out.write_bytes(bytes(data))

    assert not is_up_to_date(out, *args)
    assert is_up_to_date(out, *args, verify=False)  # the cheap check reads no feature block
    state = check_output(out, *args)
    assert state.status == "damaged" and "frames 64-119 fail their checksum" in state.problem

    warned: list[str] = []
    result = encode_file(encoder, clip, out, EncodeOptions(fps=10), on_warning=warned.append)
    assert result.status == "encoded"
    assert warned == [f"{out}: frames 64-119 fail their checksum; the file is damaged or was modified; "
                      f"encoding it again"]
    assert result.warnings == warned
    assert out.read_bytes() != bytes(data) and same_features(out, reference)
    assert encode_file(encoder, clip, out, EncodeOptions(fps=10)).status == "skipped"


@pytest.mark.slow
def test_an_up_to_date_output_in_a_read_only_folder_is_still_reused(tmp_path, encoder, clip, reference, monkeypatch):
    """No lock file can be made there, but no run can be writing there either: a current output serves."""
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "clip.vidtok"
    out.write_bytes(reference.read_bytes())
    if POSIX and os.geteuid() == 0:  # root writes anywhere: make the folder check fail as it would for a user
        import llamavid.features.encode
        from llamavid.core.errors import InputError

        def refuse(path, label=None):
            raise InputError(f"{folder}: cannot write to the output directory (Permission denied)")

        monkeypatch.setattr(llamavid.features.encode, "check_destination", refuse)
    else:
        folder.chmod(0o500)
    try:
        assert encode_file(encoder, clip, out, EncodeOptions(fps=10)).status == "skipped"
        with pytest.raises(LlamaVidError, match="cannot write") as err:
            encode_file(encoder, clip, out, EncodeOptions(fps=2))  # not current: it would have to be written
        assert str(folder) in str(err.value)
    finally:
        folder.chmod(0o700)
    assert sorted(p.name for p in folder.iterdir()) == ["clip.vidtok"]


@pytest.mark.slow
@pytest.mark.skipif(not POSIX, reason="two CLI processes at once")
def test_two_asks_on_the_same_new_video_both_answer(tmp_path, tiny, clip):
    """Both encode into the same cache entry: one waits for the other and reuses its token file."""
    env = dict(child_env(), LLAMAVID_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "llamavid_cli", "ask", str(clip), "what color?", "--model", str(tiny.path),
           "--vision-tower", str(tiny.vision_path), "--temperature", "0", "--max-new-tokens", "4", "--fps", "10",
           "--max-frames", "4", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    answers = [json.loads(stdout)["answer"] for stdout, _ in results]
    assert answers[0] == answers[1]
    cached = list((tmp_path / "cache").rglob("*.vidtok"))
    assert len(cached) == 1
    with open_vidtok(cached[0]) as vt:
        vt.verify()
        assert vt.num_frames == 120
    assert not any(p.name.endswith((".lock", ".partial")) for p in (tmp_path / "cache").rglob("*"))
    assert not partial_dir_for(cached[0]).exists()
