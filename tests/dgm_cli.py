"""Running `dgm` in a test: its exit code and output, and the shape of a refusal."""

from dgmkit.cli.main import main


def dgm(capsys, *argv):
    """``dgm ARGV`` in this process (arguments as strings): (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(code, err, *needles):
    """A user error: exit code 1 and one `dgm: error:` line that names each of ``needles``."""
    assert code == 1 and err.startswith("dgm: error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
