"""scripts/corruption_surgery.py: the edit that README "The analysis" reports (issue 4's experiment)."""


import torch

from failatlas.models.stylegan2 import Generator, get_config


def test_project_out_leaves_only_the_kept_dimensions_correlated_with_the_factors(load_script):
    surgery = load_script("corruption_surgery")
    torch.manual_seed(0)
    G = Generator(get_config("tiny")).eval()
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(600, G.w_dim, generator=gen)
    c = torch.stack([w[:, :4].sum(1), w[:, 4] - w[:, 5]], 1) + 0.1 * torch.randn(600, 2, generator=gen)
    with torch.no_grad():
        before = G.styles(w).double()
    r_before = surgery.correlations(before, c)
    kept = surgery.project_out(G, w, c, keep=3)
    with torch.no_grad():
        after = G.styles(w).double()
    r_after = surgery.correlations(after, c)
    others = torch.ones(before.shape[1], dtype=torch.bool)
    others[kept] = False
    assert 3 <= len(kept) <= 6
    assert float(r_before[:, others].abs().max()) > 0.3  # the factors were spread over the styles
    assert float(r_after[:, others].abs().max()) < 1e-4  # and now only the kept dimensions move with them
    assert torch.equal(after[:, kept], before[:, kept])
    assert torch.allclose(after.mean(0), before.mean(0), atol=1e-4)  # every dimension keeps its mean
    assert all(a > b for a, b in zip(surgery.shares(r_after, 3), surgery.shares(r_before, 3)))


def test_corruption_levels_are_the_expected_blur_and_noise(load_script):
    surgery = load_script("corruption_surgery")

    class Fixed(torch.nn.Module):
        def forward(self, x):  # clean; blur 3 noise 1; half blur1-noise2, half blur2-noise2
            logits = torch.full((3, 10), -1e4)
            logits[0, 0] = logits[1, 1 + 3 * 2 + 0] = logits[2, 1 + 0 + 1] = logits[2, 1 + 3 + 1] = 0
            return logits

    levels = surgery.corruption_levels(Fixed(), torch.zeros(3, 1, 32, 32))
    assert torch.allclose(levels, torch.tensor([[0.0, 0.0], [3.0, 1.0], [1.5, 2.0]]))
