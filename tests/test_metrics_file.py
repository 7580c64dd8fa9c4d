"""metrics.jsonl is read by one reader (training.metrics_file.metrics_lines) for every command:
`dgm report` (read_metrics: DataError), a resumed run (RunWriter.truncate_metrics: CheckpointError,
"the run cannot be resumed") and the check of a run stopped before its first checkpoint
(RunFolder.stranded_start). Each file here is one that dgmkit never writes; every caller is held
to the same refusal, in its own error class, naming the line and why."""

import json
import os
import re
import threading

import pytest

import dgmkit.training.metrics_file as metrics_file
from dgmkit.cli.report import read_metrics
from dgmkit.errors import CheckpointError, DataError
from dgmkit.training.metrics_file import MetricsFileError, metrics_lines
from dgmkit.training.run_writer import RunFolder, RunWriter, new_run_id

LONG = '{"epoch": 2, "x": [' + "[]," * ((17 << 20) // 3) + "[]]}\n"  # 17 MiB of nested empty lists


def _report(path):
    return read_metrics(path)


def _resume(path):
    RunWriter(path.parent, {}).truncate_metrics(1)


CALLERS = [(_report, DataError, "not a metrics file of dgmkit"), (_resume, CheckpointError, "the run cannot be resumed")]
CALLER_IDS = ["report", "resume"]


def _fifo(path):
    os.mkfifo(path)


def _folder(path):
    path.mkdir()


def _dangling(path):
    path.symlink_to(path.parent / "gone.jsonl")


def _huge(path):
    with open(path, "wb") as f:  # (sparse: no disk used; refused by its size, unread: not for its first line)
        f.write(b"NaN\n")
        f.truncate((256 << 20) + 1)


def _text(text: str | bytes):
    return lambda path: path.write_bytes(text if isinstance(text, bytes) else text.encode())


# what each file is, and what its refusal says (a regular expression)
BAD = {
    "nan": (_text('{"epoch": 1}\n{"epoch": 2, "valid_elbo": NaN}\n{"epoch": 3}\n'), r"line 2\b.*NaN is not standard JSON"),
    "infinity-last": (_text('{"epoch": 1}\n{"epoch": 2, "valid_elbo": -Infinity}'), r"line 2\b.*-Infinity is not"),
    "key-twice": (_text('{"epoch": 1, "epoch": 2}\n'), r"line 1\b.*the key 'epoch' appears twice"),
    "non-object": (_text('{"epoch": 1}\n[1, 2]\n'), r"line 2\b.*not a JSON object"),
    "cut-in-the-middle": (_text('{"epoch": 1}\n{"epoch": 2, "va\n{"epoch": 3}\n'), r"line 2\b.*not a JSON object"),
    "not-utf8": (_text(b'{"epoch": 1, "note": "\xff"}\n'), r"line 1\b.*not UTF-8 text"),
    "long-line": (_text('{"epoch": 1}\n' + LONG), r"line 2\b.*17,825,[0-9]{3} bytes, more than any line dgmkit writes"),
    "fifo": (_fifo, r"metrics\.jsonl: not a regular file"),
    "folder": (_folder, r"metrics\.jsonl: (not a regular file|it is a folder)"),
    "dangling-link": (_dangling, r"metrics\.jsonl, a link to .*gone\.jsonl, names no file"),
    "huge": (_huge, r"metrics\.jsonl is larger than 256 MiB"),
}


def _ended(call, path):
    """``call(path)``'s exception (None if it returned), failing the test where it has not ended
    within 20 s (a reader blocked on a FIFO; the FIFO is then opened to let it go)."""
    out: list = []

    def target():
        try:
            call(path)
            out.append(None)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        if path.is_fifo():
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"reading {path} did not end (blocked)")
    return out[0]


@pytest.mark.parametrize("call, error, consequence", CALLERS, ids=CALLER_IDS)
@pytest.mark.parametrize("bad", list(BAD))
def test_every_reader_refuses_a_metrics_file_dgmkit_never_writes_in_its_own_error_class(
    tmp_path, call, error, consequence, bad
):
    path = tmp_path / "metrics.jsonl"
    make, said = BAD[bad]
    make(path)
    before = path.read_bytes() if path.is_file() and path.stat().st_size < (64 << 20) else None
    refusal = _ended(call, path)
    assert type(refusal) is error, refusal
    assert str(path) in str(refusal) and len(str(refusal).splitlines()) == 1
    assert re.search(said, str(refusal)), str(refusal)
    if bad not in ("fifo", "folder", "dangling-link") or call is _resume:  # (an unreadable file: no verdict on it)
        assert consequence in str(refusal)
    if before is not None:
        assert path.read_bytes() == before  # (a refused resume leaves the file as it was)
    assert os.path.lexists(path)


# files of one line (or none) that dgmkit never writes: a folder holding one of them and config.json looked stranded
ONE_LINE = {
    "nan": _text('{"epoch": 1, "valid_elbo": NaN}\n'),
    "non-object": _text("[1, 2]\n"),
    "not-utf8": _text(b'{"epoch": 1, "note": "\xff"}\n'),
    "long-line": _text(LONG),
    "fifo": _fifo,
    "folder": _folder,
    "dangling-link": _dangling,
    "huge": _huge,
}


@pytest.mark.parametrize("bad", list(ONE_LINE))
def test_a_folder_whose_metrics_file_is_refused_is_no_stranded_start(tmp_path, bad):
    """--resume of a run stopped before its first checkpoint removes its metrics.jsonl and starts
    again: only where that file is one dgmkit writes (a line, or none), read as a resume reads it."""
    (tmp_path / "config.json").write_text(json.dumps({"run_id": new_run_id()}))
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert RunFolder(tmp_path, fresh=False).stranded_start()
    (tmp_path / "metrics.jsonl").unlink()
    ONE_LINE[bad](tmp_path / "metrics.jsonl")
    stranded: list[bool] = []
    assert (
        _ended(lambda p: stranded.append(RunFolder(p.parent, fresh=False).stranded_start()), tmp_path / "metrics.jsonl")
        is None
    )
    assert stranded == [False]


def test_a_folder_whose_only_metrics_line_a_crash_cut_short_is_a_stranded_start(tmp_path):
    """Epoch 1's line, appended before its checkpoint, cut short (no newline, not whole JSON) by a
    crash: the run stopped before its first checkpoint, which --resume starts again (as it drops
    such a line after a checkpoint); a whole line more before it is not."""
    (tmp_path / "config.json").write_text(json.dumps({"run_id": new_run_id()}))
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "va')
    assert RunFolder(tmp_path, fresh=False).stranded_start()
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, "va')
    assert RunFolder(tmp_path, fresh=False).stranded_start()  # (one whole line, at most, as before)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "va')
    assert not RunFolder(tmp_path, fresh=False).stranded_start()


def test_a_last_line_cut_short_is_left_out_by_report_and_dropped_on_resume(tmp_path):
    """Read while a run may write it (dgm report), a last line with no newline that is not yet
    whole JSON is the line being written; on a resume (under the run's lock) it is an append that a
    crash cut short before its epoch's checkpoint, and is dropped with the epochs after the
    checkpoint. Strictly read (being_written=False) it is refused."""
    path = tmp_path / "metrics.jsonl"
    for cut in ('{"epoch": 2, "valid_el', b'{"epoch": 2, "note": "\xc3'):  # (and in a character's bytes)
        text = b'{"epoch": 1, "valid_elbo": -3.0}\n' + (cut if isinstance(cut, bytes) else cut.encode())
        path.write_bytes(text)
        assert read_metrics(path) == [{"epoch": 1, "valid_elbo": -3.0}]
        with pytest.raises(MetricsFileError, match="line 2: .*cut short"):
            list(metrics_lines(path, being_written=False))
        _resume(path)
        assert path.read_bytes() == b'{"epoch": 1, "valid_elbo": -3.0}\n'
    path.write_bytes(b'{"epoch": 1, "valid_el\n{"epoch": 2}\n')  # cut short, and not the last: refused, kept
    with pytest.raises(CheckpointError, match=r"line 1 is not a metrics record of dgmkit \(.*\); the run"):
        _resume(path)
    assert path.read_bytes() == b'{"epoch": 1, "valid_el\n{"epoch": 2}\n'
    path.write_text('{"epoch": 1}\n{"epoch": 2}')  # a last line with no newline that is whole: read by both
    assert read_metrics(path) == [{"epoch": 1}, {"epoch": 2}]
    RunWriter(tmp_path, {}).truncate_metrics(2)
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'


def test_an_epoch_s_line_is_appended_alone_and_synced_and_a_failed_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    """Each epoch writes its own line, not the file again (a run of many epochs rewrote ever more):
    the file's earlier bytes stay where they are; a write that fails part way (a disk that
    fills) or is interrupted cuts the file back and names the problem."""
    import errno

    import dgmkit._io as io_module
    from dgmkit.errors import DgmError

    path, writer = tmp_path / "metrics.jsonl", RunWriter(tmp_path, {})
    writer.metrics({"epoch": 1, "valid_elbo": -3.0})
    inode = path.stat().st_ino
    writes: list[int] = []
    real_write = os.write
    monkeypatch.setattr(io_module.os, "write", lambda fd, b: writes.append(len(b)) or real_write(fd, b))
    for epoch in range(2, 40):
        writer.metrics({"epoch": epoch, "valid_elbo": -3.0, "note": "x" * 200})
    assert path.stat().st_ino == inode and max(writes) < 300  # (the file: 38 lines of some 240 bytes)
    assert [r["epoch"] for r in read_metrics(path)] == list(range(1, 40))
    before = path.read_bytes()

    def full(fd, b):  # half of it, then the disk is full
        if len(b) > 10:
            return real_write(fd, bytes(b)[: len(b) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_module.os, "write", full)
    with pytest.raises(DgmError, match="no space left .*metrics.jsonl"):
        writer.metrics({"epoch": 40, "valid_elbo": -3.0})
    assert path.read_bytes() == before
    monkeypatch.setattr(io_module.os, "write", real_write)
    monkeypatch.setattr(io_module.os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        writer.metrics({"epoch": 40, "valid_elbo": -3.0})
    assert path.read_bytes() == before
    monkeypatch.undo()
    path.unlink()
    (tmp_path / "elsewhere.jsonl").write_bytes(before)
    path.symlink_to(tmp_path / "elsewhere.jsonl")  # a link in its place: not followed, refused
    with pytest.raises(DgmError, match="metrics.jsonl"):
        writer.metrics({"epoch": 40, "valid_elbo": -3.0})
    assert (tmp_path / "elsewhere.jsonl").read_bytes() == before


@pytest.mark.parametrize("call, error, consequence", CALLERS, ids=CALLER_IDS)
def test_every_reader_counts_the_lines_of_a_metrics_file_against_one_limit(tmp_path, monkeypatch, call, error, consequence):
    path = tmp_path / "metrics.jsonl"
    path.write_text('\n{"epoch": 1}\n  \n{"epoch": 2}\n\n')
    monkeypatch.setattr(metrics_file, "MAX_METRICS_LINES", 2)
    call(path)  # 2 lines, and blank ones: within the limit
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    with pytest.raises(error, match=f"holds more than 2 lines, one an epoch.*; {consequence}"):
        call(path)


def test_resume_keeps_the_lines_of_its_epochs_as_written_and_drops_the_rest(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [b'{"epoch": 1, "lr": 1e-05}\r\n', b"\n", b'{"epoch": 2, "valid_elbo": -3.10}\n', b'{"epoch": 3}\n']
    path.write_bytes(b"".join(lines))
    RunWriter(tmp_path, {}).truncate_metrics(2)
    assert path.read_bytes() == lines[0] + lines[2]  # (blank lines dropped; the others byte for byte)
    for line, why in (('{"loss": 1}', "it names no epoch"), ('{"epoch": 1.0}', "its epoch is not a whole number")):
        path.write_text('{"epoch": 1}\n' + line + "\n")
        with pytest.raises(CheckpointError, match=rf"line 2 is not a metrics record of dgmkit \({why}\); the run"):
            _resume(path)
    (tmp_path / "metrics.jsonl").unlink()
    RunWriter(tmp_path, {}).truncate_metrics(2)  # no file: none written
    assert not path.exists()


def test_the_metrics_reader_yields_a_line_at_a_time(tmp_path):
    """The rows come one at a time, as the file is read (a caller keeps what it needs of each):
    the first is had before a later line is read, or refused."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\nNaN\n')
    lines = metrics_lines(path)
    first = next(lines)
    assert (first.number, first.text, first.row) == (1, b'{"epoch": 1}', {"epoch": 1})
    assert next(lines).row == {"epoch": 2}
    with pytest.raises(MetricsFileError, match="line 3: NaN is not standard JSON"):
        next(lines)
    assert list(metrics_lines(tmp_path / "none.jsonl")) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_an_append_to_a_fifo_in_place_of_metrics_file_is_refused_not_held(tmp_path):
    """A FIFO at metrics.jsonl is refused as not a regular file: opened to write, it held the
    epoch's append for ever (until a reader came), where a link or a folder was refused at once."""
    from dgmkit.errors import DgmError

    path = tmp_path / "metrics.jsonl"
    os.mkfifo(path)
    result: list[BaseException | None] = []

    def append() -> None:
        try:
            RunWriter(tmp_path, {}).metrics({"epoch": 1, "valid_elbo": -3.0})
            result.append(None)
        except BaseException as e:  # noqa: BLE001 (handed to the test's thread)
            result.append(e)

    thread = threading.Thread(target=append, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # (let the held open go, so that the thread ends)
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb"):
            thread.join(10)
        pytest.fail("the append was held by the FIFO")
    assert isinstance(result[0], DgmError) and "not a regular file" in str(result[0])


@pytest.mark.parametrize(
    "epochs",
    [[1, 3], [1, 2, 2, 3], [2, 1, 3], [1], []],
    ids=["missing", "repeated", "out-of-order", "short", "none"],
)
def test_resume_refuses_a_metrics_file_without_one_line_of_each_epoch_its_checkpoint_trained(tmp_path, epochs):
    """A resume after epoch 3 appends epoch 4's line: to lines of missing, repeated or shuffled epochs it
    would leave a log of them. Refused by name, the file as it was; lines of epochs 1 to 3 (and later
    ones, dropped) go on."""
    path = tmp_path / "metrics.jsonl"
    text = "".join(f'{{"epoch": {e}}}\n' for e in epochs)
    path.write_text(text)
    with pytest.raises(CheckpointError, match=r"holds the lines of epochs \[.*\] where its checkpoint has trained 3 "):
        RunWriter(tmp_path, {}).truncate_metrics(3)
    assert path.read_text() == text
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epoch": 4}\n')
    RunWriter(tmp_path, {}).truncate_metrics(3)
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n'
