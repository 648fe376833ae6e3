"""``iris feedback export``, ``iris dataset build`` and ``iris stats --plot`` as a person runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.data import FINETOME_SAMPLE
from finetune.feedback import Manifest, Pseudonyms, export_feedback
from tests.finetune.conftest import SECOND_MODEL, Seeded
from tests.finetune.test_feedback import copy_database

IRIS = str(Path(sys.executable).with_name("iris"))


@pytest.fixture
def env(seeded: Seeded, tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "DATABASE_URL", "HF_"))}
    return {**clean, "IRIS_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": copy_database(seeded, tmp_path)}


def iris(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IRIS, *args], env=env, capture_output=True, text=True, timeout=300, cwd="/")


def test_export_then_build_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    exported = iris(env, "feedback", "export", "--out", str(tmp_path / "feedback"))
    assert exported.returncode == 0, exported.stderr
    manifest = Manifest.read(tmp_path / "feedback" / "manifest.json")
    # The settings' default scrubs; the file content is what Python's export gives.
    assert manifest.scrub is True
    deployment = Pseudonyms.of_deployment(Path(env["IRIS_DATA_DIR"]))  # the key the command used
    assert manifest == export_feedback(
        env["DATABASE_URL"], tmp_path / "python", scrub=True, pseudonyms=deployment
    )
    assert (
        f"{manifest.counts['sft']} SFT" in exported.stdout
        and f"{manifest.counts['kto']} KTO" in exported.stdout
    )

    built = iris(env, "dataset", "build", "--finetome", str(FINETOME_SAMPLE), "--out", str(tmp_path / "ds"))
    assert built.returncode == 0, built.stderr
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    for step in report["steps"]:
        assert step["name"].replace("_", " ") in built.stdout
    assert report["steps"][0]["counts"]["feedback"] == manifest.counts["sft"]
    loaded = datasets.load_from_disk(str(tmp_path / "ds" / "hf"))
    assert {name: len(split) for name, split in loaded.items()} == report["splits"]

    from_folder = iris(
        env, "dataset", "build", "--finetome", "sample", "--feedback", str(tmp_path / "feedback"),
        "--out", str(tmp_path / "ds2"), "--oversample", "1", "--person-cap", "0", "--sample-size", "50",
    )  # fmt: skip
    assert from_folder.returncode == 0, from_folder.stderr
    second = json.loads((tmp_path / "ds2" / "report.json").read_text())
    assert second["config"]["feedback_oversample"] == 1.0 and second["config"]["sample_size"] == 50
    assert second["feedback"] == str(tmp_path / "feedback")


def test_a_date_range_and_consent_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:
    everything = iris(env, "feedback", "export", "--out", str(tmp_path / "all"), "--no-scrub")
    assert everything.returncode == 0, everything.stderr
    assert "2002" not in (tmp_path / "all" / "kto.jsonl").read_text()
    nothing = iris(env, "feedback", "export", "--out", str(tmp_path / "none"), "--until", "2000-01-01")
    assert nothing.returncode == 0 and Manifest.read(tmp_path / "none" / "manifest.json").counts["kto"] == 0
    bad_date = iris(env, "feedback", "export", "--out", str(tmp_path / "x"), "--since", "last week")
    assert bad_date.returncode == 2 and "is not a date" in bad_date.stderr

    said_no = iris(env, "feedback", "consent", "telegram", "2002", "no")  # bob
    assert said_no.returncode == 0, said_no.stderr
    without_bob = iris(env, "feedback", "export", "--out", str(tmp_path / "no-bob"), "--no-scrub")
    assert without_bob.returncode == 0
    before, after = (Manifest.read(tmp_path / d / "manifest.json") for d in ("all", "no-bob"))
    assert after.counts["kto"] < before.counts["kto"]
    assert "largest planet" in (tmp_path / "all" / "kto.jsonl").read_text()
    assert "largest planet" not in (tmp_path / "no-bob" / "kto.jsonl").read_text()
    opt_in = iris(env, "feedback", "export", "--out", str(tmp_path / "opt-in"), "--consent", "opt-in")
    assert opt_in.returncode == 0 and Manifest.read(tmp_path / "opt-in" / "manifest.json").counts["kto"] == 0


def test_stats_plot_draws_the_rating_picture(env: dict[str, str], tmp_path: Path, seeded: Seeded) -> None:
    image = pytest.importorskip("matplotlib.image")
    picture = tmp_path / "pictures" / "stats.png"
    result = iris(env, "stats", "--json", "--plot", str(picture))
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)  # the picture does not disturb the JSON
    assert {m["model"] for m in figures["by_model"]} == {seeded.base_model, SECOND_MODEL}
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = image.imread(str(picture)).shape
    assert width > 1000 and height > 600

    from finetune.plots import plot_stats
    from storage import queries
    from storage.database import make_engine
    from storage.repository import SqlStore

    engine = make_engine(env["DATABASE_URL"])
    figure = plot_stats(SqlStore(engine).stats(), queries.activity(engine), tmp_path / "again.png")
    engine.dispose()
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == [
        "Ratings per model version",
        "Thumbs-up share per model version, by day of reply",
        f"Messages per day · {figures['voice_share']:.0%} voice overall",
        "Corrections by review status",
    ]
    ratings_axes = figure.axes[0]
    labels = [label.get_text() for label in ratings_axes.get_yticklabels()]
    assert f"{SECOND_MODEL} (active)" in labels and seeded.base_model in labels
    shares = [text.get_text() for text in ratings_axes.texts]
    assert all("up of" in share for share in shares)


def test_stats_plot_shows_an_ab_tests_arms_side_by_side(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from datetime import UTC, datetime

    from core.experiments import Arm, ArmCounts, ArmRating, Experiment, report
    from finetune.plots import plot_stats
    from storage import queries
    from storage.database import make_engine
    from storage.repository import SqlStore

    experiment = Experiment(7, "cpu-tiny-run", 0.5, 30, 0.1, datetime(2026, 12, 4, tzinfo=UTC), control="smol")
    # One person to a conversation: 10 people an arm.
    ratings = [ArmRating(n // 3, Arm.CONTROL, n % 3 != 0, n // 3) for n in range(30)]  # 20 of 30 up
    ratings += [ArmRating(100 + n // 3, Arm.CANDIDATE, n % 5 != 0, 100 + n // 3) for n in range(30)]  # 24 of 30
    counts = {Arm.CONTROL: ArmCounts(10, 40, 30, ("smol",)), Arm.CANDIDATE: ArmCounts(10, 40, 30, ("new",))}
    ab = report(experiment, counts, ratings)
    engine = make_engine(env["DATABASE_URL"])
    figure = plot_stats(SqlStore(engine).stats(), queries.activity(engine), tmp_path / "ab.png", ab)
    engine.dispose()
    arms, difference = figure.axes[4], figure.axes[5]
    assert arms.get_title().startswith("A/B test 7 (running)")
    assert [text.get_text() for text in arms.texts] == [
        "67% of 30\nfrom 10 people",
        "80% of 30\nfrom 10 people",
    ]
    assert difference.get_title() == f"Candidate − control, 95% · rule now: {ab.decision.value}"
    assert [label.get_text() for label in difference.get_yticklabels()] == [
        "Newcombe",
        "bootstrap over\nconversations",
    ]
    assert (tmp_path / "ab.png").read_bytes()[:4] == b"\x89PNG"


def test_an_unreachable_hub_is_explained(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    hub = "mlabonne/FineTome-100k"
    out = str(tmp_path / "out")
    result = iris(offline, "dataset", "build", "--finetome", hub, "--out", out, "--no-feedback")
    assert result.returncode == 1
    assert "could not load 'mlabonne/FineTome-100k'" in result.stderr and "'sample'" in result.stderr
    assert "Traceback" not in result.stderr
    missing = iris(env, "dataset", "build", "--finetome", str(tmp_path / "nope.parquet"), "--out", out)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    (tmp_path / "taken").write_text("a file where the picture's folder should be")
    unwritable = iris(env, "stats", "--plot", str(tmp_path / "taken" / "stats.png"))
    assert unwritable.returncode == 1 and "could not write" in unwritable.stderr
    assert "Traceback" not in missing.stderr + unwritable.stderr
