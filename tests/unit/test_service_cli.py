"""`imgbuild blueprints ...`, `imgbuild compose ...` against a service, and `imgbuild serve`'s refusals."""

from __future__ import annotations

import grp
import stat
import sys
from pathlib import Path

import pytest

from builder import run
from builder.cli import main
from builder.errors import ImgbuildError
from builder.service.server import Service, ServiceConfig
from tests.unit.test_service_support import blueprint, running_service, short_tempdir, standin_builder

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL

ROOT = Path(__file__).resolve().parents[2]


def test_client_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path)) as (service, _):
        sock = ["--socket", str(service.config.socket_path)]
        (tmp_path / "demo.toml").write_text(blueprint())
        (tmp_path / "other.json").write_text('{"name": "other", "version": "0.1.0"}')
        assert (
            main(["blueprints", "push", *sock, str(tmp_path / "demo.toml"), str(tmp_path / "other.json")])
            == 0
        )
        assert main(["blueprints", "push", *sock, str(tmp_path / "demo.toml")]) == 0
        capsys.readouterr()
        assert main(["blueprints", "list", *sock]) == 0
        assert capsys.readouterr().out == "demo\nother\n"
        assert main(["blueprints", "show", *sock, "demo"]) == 0
        assert 'version = "1.0.1"' in capsys.readouterr().out
        assert main(["blueprints", "changes", *sock, "demo"]) == 0
        out = capsys.readouterr().out
        assert out.index("version 1.0.1 saved") < out.index("version 1.0.0 saved")

        start = ["compose", "start", *sock, "demo", "qcow2", "--ref", "oci:/standin/ok", "--size", "4096M"]
        assert main([*start, "--wait", "--poll", "0.1"]) == 0
        out = capsys.readouterr().out
        compose_id = out.split()[1]
        assert f"Compose {compose_id} FINISHED" in out
        assert main(["compose", "status", *sock]) == 0
        assert f"{compose_id} FINISHED qcow2  demo 1.0.1" in capsys.readouterr().out
        assert main(["compose", "log", *sock, compose_id, "--follow", "--poll", "0.1"]) == 0
        assert "compose FINISHED" in capsys.readouterr().out
        assert main(["compose", "image", *sock, compose_id, "--output", str(tmp_path)]) == 0
        image = tmp_path / f"{compose_id}-disk.qcow2"
        assert capsys.readouterr().out.strip() == str(image)
        assert image.read_bytes().startswith(b"qcow2:oci:/standin/ok")
        assert main(["compose", "cancel", *sock, compose_id]) == 2
        assert "BuildInWrongState" in capsys.readouterr().err
        assert main(["compose", "delete", *sock, compose_id]) == 0

        failing = [
            "compose",
            "start",
            *sock,
            "demo",
            "raw",
            "--ref",
            "oci:/standin/fail",
            "--wait",
            "--poll",
            "0.1",
        ]
        assert main(failing) == 1
        assert "the stand-in was asked to fail" in capsys.readouterr().err
        # without --ref: the blueprint's container_ref, else a Weldr error naming the ways to give one
        assert main(["compose", "start", *sock, "demo", "raw"]) == 2
        assert "--default-ref" in capsys.readouterr().err
        (tmp_path / "named.toml").write_text('container_ref = "oci:/standin/ok"\n' + blueprint("named"))
        assert main(["blueprints", "push", *sock, str(tmp_path / "named.toml")]) == 0
        assert main(["compose", "start", *sock, "named", "raw", "--wait", "--poll", "0.1"]) == 0
        assert "FINISHED" in capsys.readouterr().out
        assert main(["blueprints", "delete", *sock, "other"]) == 0
        assert main(["blueprints", "show", *sock, "other"]) == 2
        assert main(["blueprints", "show", *sock, "../etc"]) == 2
        assert "InvalidChars" in capsys.readouterr().err


def test_client_over_tcp_with_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_service(tmp_path / "state", token="tcp-token") as (service, _):
        url = "http://{}:{}".format(*service.tcp_address)
        (tmp_path / "token").write_text("tcp-token\n")
        (tmp_path / "bad").write_text("nope\n")
        (tmp_path / "demo.toml").write_text(blueprint())
        assert main(["blueprints", "push", "--url", url, str(tmp_path / "demo.toml")]) == 2
        assert "refused the token" in capsys.readouterr().err
        assert main(["blueprints", "list", "--url", url, "--token-file", str(tmp_path / "bad")]) == 2
        assert "refused the token" in capsys.readouterr().err
        push = ["blueprints", "push", "--url", url, "--token-file", str(tmp_path / "token")]
        assert main([*push, str(tmp_path / "demo.toml")]) == 0
        assert main(["blueprints", "list", "--url", url, "--token-file", str(tmp_path / "token")]) == 0
        assert capsys.readouterr().out == "demo\n"


def test_unreachable_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blueprints", "list", "--socket", str(tmp_path / "none.socket")]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the imgbuild service" in err and "Traceback" not in err


def _serve(*args: str) -> run.Completed:
    return run.run(
        [sys.executable, "-m", "builder", "serve", *args],
        env={"PYTHONPATH": str(ROOT)},
        check=False,
        timeout=60,
    )


def test_serve_refuses_tcp_without_token(tmp_path: Path) -> None:
    sockdir = short_tempdir()
    result = _serve("--socket", f"{sockdir}/api.socket", "--state", str(tmp_path), "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.decode().strip().count("\n") == 0, result.stderr
    assert "--token-file" in result.stderr.decode()
    assert not Path(f"{sockdir}/api.socket").exists()
    Path(sockdir).rmdir()


def test_serve_refuses_a_socket_in_use(tmp_path: Path) -> None:
    with running_service(tmp_path / "state") as (service, cli):
        result = _serve("--socket", str(service.config.socket_path), "--state", str(tmp_path / "other"))
        assert result.returncode == 2 and "in use" in result.stderr.decode()
        assert cli.get("/api/status").status == 200  # the running service's socket was left alone


def test_socket_mode_and_group(tmp_path: Path) -> None:
    sockdir = Path(short_tempdir())
    config = ServiceConfig(state_dir=tmp_path / "state", socket_path=sockdir / "api.socket", group="nogroup")
    with Service(config):
        info = (sockdir / "api.socket").stat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == grp.getgrnam("nogroup").gr_gid
    assert not (sockdir / "api.socket").exists()
    with pytest.raises(ImgbuildError, match="no group"):
        Service(
            ServiceConfig(
                state_dir=tmp_path / "state", socket_path=sockdir / "b.socket", group="no-such-group"
            )
        ).start()
    assert not (sockdir / "b.socket").exists()
    sockdir.rmdir()


def test_a_blueprint_naming_another_image_than_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bp = tmp_path / "bp.toml"
    bp.write_text('container_ref = "registry.invalid/os:1"\n' + blueprint())
    assert main(["plan", "qcow2", "registry.invalid/other:2", "--blueprint", str(bp)]) == 2
    err = capsys.readouterr().err
    assert "the blueprint names the image 'registry.invalid/os:1' (container_ref)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("pattern", ["oci-archive:relative/*", "ftp:/srv/*"])
def test_serve_refuses_a_bad_policy_before_creating_anything(
    tmp_path: Path, pattern: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sockdir = Path(short_tempdir())
    argv = [
        "serve",
        "--socket",
        f"{sockdir}/api.socket",
        "--state",
        str(tmp_path / "state"),
        "--allow-ref",
        pattern,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--allow-ref" in err and "Traceback" not in err
    assert not (tmp_path / "state").exists() and list(sockdir.iterdir()) == []
    sockdir.rmdir()
