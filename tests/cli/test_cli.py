from __future__ import annotations

from click.testing import CliRunner

from spatialfuse import __version__
from spatialfuse.cli.main import cli


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_info_imzml(shared_data):
    path = shared_data / "imzml/galaxyp_i2nca/combined_pc.imzML"
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "processed" in result.output
    assert "8 on a 4 × 21 grid" in result.output
    assert "20 × 20 µm" in result.output
    assert "50.1487 – 299.9597" in result.output


def test_info_visium(shared_data):
    result = CliRunner().invoke(cli, ["info", str(shared_data / "visium/scanpy_visium_1.0.0")])
    assert result.exit_code == 0, result.output
    assert "spots: 100" in result.output and "0.7299" in result.output


def test_info_visium_without_counts(shared_data):
    path = shared_data / "visium/cytassist_ffpe_mouse_brain"
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "4,992" in result.output and "counts:     not read" in result.output


def test_info_image_with_and_without_pixel_size(shared_data):
    path = shared_data / "histology/squidpy_test_img/test_img.jpg"
    plain = CliRunner().invoke(cli, ["info", str(path)])
    assert plain.exit_code == 0 and "unknown (not in the file" in plain.output
    given = CliRunner().invoke(cli, ["info", str(path), "--pixel-size", "0.5"])
    assert given.exit_code == 0 and "0.5 × 0.5 µm" in given.output


def test_info_missing_file_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "nope.imzML")])
    assert result.exit_code == 1
    assert "nope.imzML: no such imzML file" in result.output
    assert "Traceback" not in result.output


def test_run_refuses_a_folder_of_foreign_files_and_force_keeps_them(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (190, 110, 140)).save(tmp_path / "he.png")
    config = tmp_path / "config.yaml"
    config.write_text(
        "output: out\n"
        "modalities:\n  he: {kind: histology, path: he.png, pixel_size_um: 2}\n"
        "outputs: {report: false}\n",
        encoding="utf-8",
    )
    mine = {
        ".gitlab-ci.yml": b"stages: [test]\n",
        ".env.local": b"TOKEN=x\n",
        ".git/objects/x.y.z": b"\x00blob",
        "._msi.imzML": b"\x00\x05\x16\x07",
    }
    for name, content in mine.items():
        (tmp_path / "out" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / name).write_bytes(content)
    runner = CliRunner()
    refused = runner.invoke(cli, ["run", str(config), "--quiet"])
    assert refused.exit_code == 1, refused.output
    assert "did not write" in refused.output and "--force" in refused.output
    assert "Traceback" not in refused.output
    assert not (tmp_path / "out" / "summary.json").exists()
    forced = runner.invoke(cli, ["run", str(config), "--quiet", "--force"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "out" / "summary.json").is_file()
    assert {name: (tmp_path / "out" / name).read_bytes() for name in mine} == mine


def test_samples_summary_says_when_the_combined_table_was_reused(tmp_path):
    from types import SimpleNamespace

    from spatialfuse.cli._run import _samples_summary

    sample = SimpleNamespace(ok=True, seconds=3.0, summary={"clustering": {"n_clusters": 4}})
    combined = {"n_spots": 120, "spots_per_sample": {"a": 60, "b": 60}, "clustering": {}}

    def summary(reused):
        result = SimpleNamespace(
            failed=[],
            samples={"a": sample, "b": sample},
            scheduler="LocalCluster",
            n_workers=2,
            timings={"samples": 6.0},
            output=tmp_path,
            summary={"combined": combined},
            files={},
            reused=reused,
        )
        return [line for line in _samples_summary(result).splitlines() if "combined" in line]

    assert summary(["combined"]) == ["  combined table: 120 spots of 2 samples [reused]"]
    assert summary([]) == ["  combined table: 120 spots of 2 samples"]
