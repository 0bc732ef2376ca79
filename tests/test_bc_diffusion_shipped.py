"""The README's shipped Mamba Policy (pick_place, mamba1 without attention, 7,200 GPU steps), guarded
against env or network changes that would silently break it: the float16 export through the public
eval command, no dataset. Measured on env seeds 100001-100002: 2/2 (200 episodes from 100000:
52.5%; the export acts in float16, so one episode may flip on another CPU)."""
import json
from pathlib import Path

from agents.bc_diffusion import main

EXPORT = Path(__file__).resolve().parents[1] / "agents" / "policies" / "manipulation" / "pick_place_mamba1_noattn_7200.pt"


def test_the_shipped_pick_place_policy_places_the_cube(tmp_path):
    assert main(["eval", str(EXPORT), "--episodes", "2", "--seed", "100001", "--no-video", "--out", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("eval_*.json")).read_text())
    assert result["task"] == "pick_place" and result["step"] == 7200 and result["episodes"] == 2
    assert result["success_rate"] >= 0.5, result
