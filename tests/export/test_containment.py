"""Containment: plugins that print, exit or build nothing, broken formats, and a CLI that turns
every failure of the machine it runs on into one line.

The plugins are real packages (``tests/support/plugins/zoo-test-unruly``,
``tests/support/plugins/zoo-test-broken-exporter``), built into wheels and pip-installed into
their own folders; ``zoo`` runs in a subprocess with those folders on ``PYTHONPATH``, as a
user's would.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_zoo
from tests.support.plugins import pythonpath, session_site, session_workdir
from zoo.cli.main import main
from zoo.errors import PluginError, UsageError

UNRULY = "zoo-test-unruly"
BROKEN_EXPORTER = "zoo-test-broken-exporter"
BUILDER_MODELS = ["builder_returns_none", "builder_raises", "builder_exits",
                  "builder_module_exits"]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """distribution name -> a ``--target`` folder holding that distribution alone."""
    return session_site(session_workdir(tmp_path_factory.getbasetemp()))


@pytest.fixture
def unruly_in_process(site: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The unruly plugins visible to this process (entry points read sys.path live)."""
    monkeypatch.syspath_prepend(str(site[UNRULY]))
    yield
    for name in [m for m in sys.modules if m.split(".")[0] == "zoo_test_unruly"]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    from tests.inference.test_imaging import make_image

    path = tmp_path_factory.mktemp("pictures") / "street.png"
    Image.fromarray(make_image(height=20, width=30)).save(path)
    return path


# -- plugin code is contained -------------------------------------------------------------------


def test_plugin_code_redirects_stdout_and_names_the_plugin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from zoo.catalog.plugins import plugin_code

    stdout = sys.stdout
    with plugin_code("chatty", "testing"):
        print("from the plugin")
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - a plugin that takes stdout over
    assert sys.stdout is stdout  # put back
    out, err = capsys.readouterr()
    assert (out, err) == ("", "from the plugin\n")

    cases: list[tuple[BaseException, str]] = [
        (ValueError("needs  a\nconfig"), "ValueError: needs a config"),
        (SystemExit(0), "SystemExit(0): a plugin must not call sys.exit()"),
        (SystemExit("bye"), "SystemExit('bye'): a plugin must not call sys.exit()"),
        (GeneratorExit(), "GeneratorExit"),
    ]
    for raised, reason in cases:
        with pytest.raises(PluginError) as info, plugin_code("p", "building model 'm'"):
            raise raised
        assert str(info.value) == f"plugin 'p' failed in building model 'm': {reason}"
        assert info.value.__cause__ is raised
    for passes in (UsageError("zoo's own"), KeyboardInterrupt(), MemoryError(),
                   OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(type(passes)) as info, plugin_code("p", "x"):
            raise passes
        assert info.value is passes  # the machine's faults are not the plugin's
    with (pytest.raises(PluginError, match=r"plugin 'p' failed in x: .*No such file"),
          plugin_code("p", "x")):
        open("/nonexistent/zoo/file")  # noqa: SIM115 - a plugin's own bad path


def test_plugin_code_blocks_overlapping_on_two_threads_put_stdout_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An export runs the model on a second thread while its format prepares: blocks that
    enter A, B and leave A, B (contextlib.redirect_stdout would leave stdout on stderr)."""
    import threading

    from zoo.catalog.plugins import plugin_code

    stdout = sys.stdout
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def second() -> None:
        a_in.wait()
        with plugin_code("b", "testing"):
            b_in.set()
            a_out.wait()
            print("from b")

    worker = threading.Thread(target=second)
    worker.start()
    with plugin_code("a", "testing"):
        a_in.set()
        b_in.wait()
        print("from a")
    a_out.set()
    worker.join()
    assert sys.stdout is stdout
    out, err = capsys.readouterr()
    assert out == ""
    assert sorted(err.splitlines()) == ["from a", "from b"]


def test_plugin_stdout_never_reaches_zoos_stdout(
    site: dict[str, Path], tmp_path: Path, picture: Path
) -> None:
    """The noisy plugin prints at import, in every hook and in its builder: `--json` stays
    parseable and `zoo fetch` prints nothing but the path; the noise goes to stderr."""
    from tests.support.httpserver import state_dict_bytes

    env = pythonpath(site[UNRULY])
    listing = run_zoo(["list", "--json"], env=env)
    assert listing.returncode == 0, listing.stderr
    assert {"noisy_model", *BUILDER_MODELS} <= {r["name"] for r in json.loads(listing.stdout)}
    for line in ("NOISY: imported", "NOISY: zoo_models", "NOISY: zoo_builders"):
        assert line in listing.stderr.splitlines()

    weights = tmp_path / "single_conv.pth"
    weights.write_bytes(state_dict_bytes("single_conv"))
    fetched = run_zoo(["fetch", "single_conv", "--weights", str(weights)], env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == f"{weights}\n"

    ran = run_zoo(["run", "noisy_model", str(picture), "--weights", "none", "--json",
                   "-o", str(tmp_path / "out")], env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["model"] == "noisy_model"
    assert "NOISY: building noisy_model" in ran.stderr.splitlines()


def test_sys_exit_in_a_plugin_disables_that_plugin_only(site: dict[str, Path]) -> None:
    """sys.exit(0) at import and in a hook: zoo goes on (never exit 0 with no output), warns
    once per plugin naming it, and `zoo plugins` shows why."""
    env = pythonpath(site[UNRULY])
    result = run_zoo(["plugins", "--json"], env=env)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    exit_reason = "SystemExit(0): a plugin must not call sys.exit()"
    assert rows["unruly_exits_on_import"]["status"] == "failed"
    assert rows["unruly_exits_on_import"]["error"] == f"failed to load: {exit_reason}"
    assert rows["unruly_exits_in_hook"]["error"] == f"zoo_models() raised {exit_reason}"
    assert rows["unruly_noisy"]["status"] == rows["unruly_builders"]["status"] == "ok"
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("zoo: warning:")]
    assert warnings == [
        f"zoo: warning: plugin 'unruly_exits_on_import' disabled: failed to load: {exit_reason}",
        f"zoo: warning: plugin 'unruly_exits_in_hook' disabled: zoo_models() raised "
        f"{exit_reason}",
    ]
    info = run_zoo(["info", "noisy_model", "--json"], env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["plugin"] == "unruly_noisy"


@pytest.mark.usefixtures("unruly_in_process")
def test_builders_that_break_the_contract_are_the_plugins_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, picture: Path
) -> None:
    """None instead of a module, an exception, sys.exit() in the builder or in its module's
    import: exit 1, one line naming the plugin, the model and the architecture."""
    expected = {
        "builder_returns_none": "zoo: error: plugin 'unruly_builders': the builder of "
        "architecture 'returns_none' returned None for model 'builder_returns_none', not a "
        "torch.nn.Module",
        "builder_raises": "zoo: error: plugin 'unruly_builders' failed in building model "
        "'builder_raises' (architecture 'raises'): ValueError: this builder needs a config file",
        "builder_exits": "zoo: error: plugin 'unruly_builders' failed in building model "
        "'builder_exits' (architecture 'exits'): SystemExit(3): a plugin must not call",
        "builder_module_exits": "zoo: error: plugin 'unruly_builders' failed in importing "
        "builder 'zoo_test_unruly.exits_on_import:build' for model 'builder_module_exits': "
        "SystemExit(0)",
    }
    for model, message in expected.items():
        code = main(["run", model, str(picture), "--weights", "none",
                     "-o", str(tmp_path / "out")])
        out, err = capsys.readouterr()
        errors = [ln for ln in err.splitlines() if ln.startswith("zoo: error:")]
        assert (code, out) == (1, ""), err
        assert len(errors) == 1 and errors[0].startswith(message), err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()

    import zoo

    with pytest.raises(PluginError, match="returned None for model 'builder_returns_none'"):
        zoo.load("builder_returns_none", weights="none")


# -- one broken exporter affects only its own format --------------------------------------------


def test_a_broken_exporter_breaks_only_its_own_format(site: dict[str, Path]) -> None:
    """Format 'broken_fmt' names a module that is not there; 'exits_fmt''s module prints and
    calls sys.exit(0) on import. `zoo info` still shows every format and exits 0; fetching
    either format is exit 1 naming the plugin."""
    env = pythonpath(site[BROKEN_EXPORTER])
    info = run_zoo(["info", "single_conv"], env=env)
    assert info.returncode == 0 and "BROKEN-EXPORTER" not in info.stdout, (
        "zoo info must survive a format whose exporter module exits on import "
        f"(get_exporter needs zoo.catalog.plugins.plugin_code): rc={info.returncode}, "
        f"stdout={info.stdout[-300:]!r}, stderr={info.stderr[-300:]!r}")
    rows = {ln.split()[0]: ln for ln in info.stdout.splitlines()[1:] if ln.strip()
            for ln in [ln.strip("│ ")] if ln}
    for fmt in ("torchscript", "lite", "onnx", "pte"):
        assert fmt in rows and "installed" in rows[fmt], f"{fmt} missing from: {info.stdout}"
    for fmt in ("broken_fmt", "exits_fmt"):
        assert fmt in rows and "broken_exporter" in rows[fmt], (
            f"the {fmt} row must name the plugin 'broken_exporter': {rows.get(fmt)!r}")
    as_json = run_zoo(["info", "single_conv", "--json"], env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["name"] == "single_conv"

    for fmt in ("broken_fmt", "exits_fmt"):
        fetched = run_zoo(["fetch", "single_conv", "--weights", "none", "--format", fmt,
                           "-o", "out"], env=env)
        errors = [ln for ln in fetched.stderr.splitlines() if ln.startswith("zoo: error:")]
        assert fetched.returncode == 1 and fetched.stdout == "" and len(errors) == 1, (
            f"--format {fmt}: expected exit 1, empty stdout and one error line naming plugin "
            f"'broken_exporter'; got rc={fetched.returncode}, stdout={fetched.stdout!r}, "
            f"stderr={fetched.stderr[-400:]!r}")
        assert "'broken_exporter'" in errors[0] and fmt in errors[0], errors[0]


def test_zoo_never_exits_0_silently_because_of_a_plugin(site: dict[str, Path]) -> None:
    """Wherever a plugin's sys.exit() is not yet contained, main() still refuses to pass it on
    as zoo's own exit: exit 1 naming the module (or, contained, exit 0 with output)."""
    env = pythonpath(site[BROKEN_EXPORTER])
    info = run_zoo(["info", "single_conv"], env=env)
    assert "Traceback" not in info.stderr
    if info.returncode == 0:
        assert "single_conv" in info.stdout and "broken_exporter" in info.stdout
    else:
        assert info.returncode == 1
        assert info.stderr.splitlines()[-1] == (
            "zoo: error: module 'zoo_test_broken_exporter.exits' called sys.exit(0) during "
            "`zoo info`; a plugin must not exit zoo (see `zoo plugins`; --debug shows where)")


# -- the CLI: failures of the machine are one line ------------------------------------------------


def _zoo_to(stdout: Any, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zoo", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=300, check=False)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_output_to_a_full_device_is_one_line() -> None:
    for args in (["schema"], ["list", "--json"], ["list"], ["info", "single_conv"]):
        with open("/dev/full", "w") as full:
            proc = _zoo_to(full, args)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr == ("zoo: error: cannot write to standard output: No space left on "
                               "device (ENOSPC); check where the output is redirected (a full "
                               "disk, /dev/full, a closed file)\n"), (args, proc.stderr)


def test_a_closed_pipe_is_quiet() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # like `zoo schema | head -c 10`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


@pytest.mark.parametrize(("fmt", "artifact"), [("torchscript", "single_conv.pt"),
                                               ("lite", "single_conv.ptl")])
def test_a_full_disk_under_an_export_is_the_disks_fault_not_the_plugins(
        tmp_path: Path, fmt: str, artifact: str) -> None:
    """ZOO_HOME (where exports are staged) on a real, full 64 KiB tmpfs: exit 1 with one line
    about the disk, not "plugin 'formats' failed", not an internal error, and not torch's
    C++ writer aborting the process (the lite archive is built in memory)."""
    from tests.support.httpserver import tmpfs

    with tmpfs(tmp_path / "disk", "64k") as disk:
        (disk / "filler").write_bytes(b"\0" * 60_000)
        proc = run_zoo(["fetch", "single_conv", "--weights", "none", "--format", fmt,
                        "-o", str(tmp_path / "out"), "--quiet"],
                       env={"ZOO_HOME": str(disk / "home")})
        leftovers = [p.name for p in (disk / "home").rglob("*") if p.is_file()
                     and p.name.startswith(artifact)]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("zoo: error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "no space left on the device" in errors[0].lower() and "plugin" not in errors[0]
    assert artifact in errors[0] and "ZOO_HOME" in errors[0]  # where, and the way out
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "out" / artifact).exists() and leftovers == []


def test_os_errors_name_the_path_and_the_way_out(tmp_path: Path) -> None:
    """Real errors from the operating system, formatted the way main() prints them."""
    from tests.support.httpserver import readonly
    from zoo.cli.main import os_error_line

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(OSError) as not_dir:
        os.mkdir(a_file / "sub")
    assert os_error_line(not_dir.value) == f"{a_file / 'sub'}: Not a directory (ENOTDIR)"
    with pytest.raises(OSError) as too_long:
        open(tmp_path / ("x" * 300), "w")  # noqa: SIM115
    assert os_error_line(too_long.value).endswith("File name too long (ENAMETOOLONG); use a "
                                                  "shorter path")
    source = tmp_path / "src"
    source.mkdir()
    with readonly(source, tmp_path / "ro") as ro:
        with pytest.raises(OSError) as rofs:
            os.mkdir(ro / "cache")
        code = rofs.value.errno
        assert code in (errno.EROFS, errno.EACCES)
        line = os_error_line(rofs.value)
        assert line.startswith(f"{ro / 'cache'}: ")
        assert "point ZOO_HOME / -o at" in line


def test_fetch_checks_the_output_folder_before_any_download(
    tmp_path: Path, http_server: Any
) -> None:
    """`-o` naming a file, a file's child or a read-only folder: exit 2 at once; the weights
    are never requested."""
    from tests.support.export_helpers import make_weights, sha256_file
    from tests.support.httpserver import readonly

    weights = make_weights("single_conv", tmp_path)
    url = http_server.serve("/w.pth", weights) + f"#sha256={sha256_file(weights)}"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    source = tmp_path / "src"
    source.mkdir()
    with readonly(source, tmp_path / "ro") as ro:
        for out, message in [
            (a_file, f"-o {a_file}: exists and is not a folder"),
            (a_file / "sub", f"-o {a_file / 'sub'}: {a_file} is not a folder"),
            (ro / "new", f"-o {ro / 'new'}: cannot write into {ro}"),
        ]:
            proc = run_zoo(["fetch", "single_conv", "--weights", url, "--format",
                            "torchscript", "-o", str(out)])
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.startswith(f"zoo: error: {message}"), proc.stderr
    assert http_server.stats("/w.pth").requests == 0
