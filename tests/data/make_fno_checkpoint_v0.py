"""Make tests/data/fno_checkpoint_v0.pt from the code at HEAD (before the issue-20 spectral convolution)."""
import torch
from funcdiff.models import build_denoiser
torch.manual_seed(0)
out = {}
configs = {
 "2d": {"backbone": "fno", "in_channels": 2, "out_channels": 2, "n_modes": [5, 6], "hidden_channels": 8, "n_layers": 2,
        "emb_dim": 16, "norm_groups": 4, "sigma_data": 0.5},
 "3d": {"backbone": "fno", "in_channels": 1, "out_channels": 1, "n_modes": [4, 4, 3], "hidden_channels": 4, "n_layers": 1,
        "emb_dim": 8, "norm_groups": 2, "sigma_data": 1.0, "noise_channel": True},
}
shapes = {"2d": [(2, 2, 16, 12), (1, 2, 11, 13)], "3d": [(2, 1, 6, 8, 7)]}
for name, cfg in configs.items():
    d = build_denoiser(cfg).eval()
    # non-zero FiLM and random spectral weights so that every parameter matters
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.1 * torch.randn_like(p))
    cases = []
    for shape in shapes[name]:
        x = torch.randn(shape)
        sigma = torch.rand(shape[0]) * 3 + 0.05
        with torch.no_grad():
            y = d(x, sigma)
        cases.append({"x": x, "sigma": sigma, "out": y})
    out[name] = {"config": cfg, "state_dict": d.state_dict(), "cases": cases}
    if name == "2d":  # a seeded sample through the whole sampler
        from funcdiff.noise import GaussianRandomField
        from funcdiff.sampling import sample
        noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
        with torch.no_grad():
            out[name]["sample"] = sample(d, (2, 2, 16, 12), noise, steps=6, solver="heun", seed=3,
                                      sigma_min=0.002, sigma_max=80.0, rho=7.0)
torch.save(out, "tests/data/fno_checkpoint_v0.pt")  # run from the repository root
