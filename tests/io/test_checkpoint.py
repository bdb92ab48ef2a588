import pytest
import torch

from medsynth.io.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    payload = {"step": 7, "G": net.state_dict(), "opt": opt.state_dict(), "best": {"ssim": {"value": 0.5, "step": 5}},
               "history": [{"step": 5, "ssim": 0.5}], "rng": torch.get_rng_state(), "version": "x"}
    path = save_checkpoint(tmp_path / "c.pt", payload)
    back = load_checkpoint(path)
    assert back["step"] == 7 and back["best"] == payload["best"] and back["history"] == payload["history"]
    for k, v in net.state_dict().items():
        assert torch.equal(back["G"][k], v)
    assert torch.equal(back["rng"], payload["rng"])
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["opt"])  # optimiser state restores
    assert not list(tmp_path.glob("*.part"))


def test_load_refuses_foreign_and_truncated_files(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt"):
        load_checkpoint(tmp_path / "foreign.pt")
    good = save_checkpoint(tmp_path / "good.pt", {"x": torch.zeros(1000)})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_only_load_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
