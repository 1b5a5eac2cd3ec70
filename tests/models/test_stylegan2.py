import copy

import pytest
import torch

from failatlas import FailatlasError, load_generator
from failatlas.models.stylegan2 import (CONFIGS, Discriminator, Generator, StyleGANConfig, minibatch_stddev,
                                        save_generator, style_conv_reference)


@pytest.fixture(scope="module")
def G(tiny_generator):
    return tiny_generator


def _zy(G, n=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, G.z_dim, generator=gen), torch.randint(0, G.num_classes, (n,), generator=gen)


def test_style_dim_matches_design_formula():
    # 2·C(4) + Σ_{r=8..R} [C(r/2) + 2·C(r)]
    assert CONFIGS["cpu-small"].style_dim == 1280
    assert CONFIGS["paper"].style_dim == 5632
    ffhq = StyleGANConfig(name="ffhq", resolution=1024, channels=(512,) * 5 + (256, 128, 64, 32),
                          d_channels=(512,) * 5 + (256, 128, 64, 32))
    assert ffhq.style_dim == 9088
    for name in ("tiny", "cpu-small", "wide-latent"):
        g = Generator(CONFIGS[name])
        assert g.style_dim == CONFIGS[name].style_dim == len(g.style_layout())


def test_the_wide_latent_config_is_cpu_small_with_the_papers_z_and_w():
    """The same synthesis (1,280 style dimensions, the same layout) behind a 512-dimensional z and w, whose
    styles span more independent directions than cpu-small's even untrained (47.6 vs 21.1, 5,000 samples)."""
    from failatlas.training.quality import style_span

    wide, small = CONFIGS["wide-latent"], CONFIGS["cpu-small"]
    assert (wide.z_dim, wide.w_dim) == (512, 512) and wide.channels == small.channels
    torch.manual_seed(0)
    g = Generator(wide).eval()
    torch.manual_seed(0)
    s = Generator(small).eval()
    assert [d.name for d in g.style_layout()] == [d.name for d in s.style_layout()]
    assert style_span(g, 1000, 0) > 1.5 * style_span(s, 1000, 0)


def test_paper_config_has_about_20m_parameters():
    n = sum(p.numel() for p in Generator(CONFIGS["paper"]).parameters())
    assert 19.5e6 < n < 21e6  # the paper: 20.2M


def test_synthesis_from_styles_equals_synthesis_and_forward(G):
    z, y = _zy(G)
    w = G.mapping(z, y)
    s = G.styles(w)
    assert s.shape == (6, G.style_dim)
    a = G.synthesis_from_styles(s)
    assert torch.allclose(a, G.synthesis(w), atol=1e-5)
    assert torch.allclose(a, G(z, y), atol=1e-5)
    # per-layer w broadcast gives the same styles
    ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
    assert torch.allclose(G.styles(ws), s, atol=1e-6)
    assert a.shape == (6, 1, 32, 32)


def test_style_layout_order_and_offsets(G):
    layout = G.style_layout()
    assert [d.offset for d in layout] == list(range(G.style_dim))
    names = []
    for d in layout:
        if not names or names[-1] != d.name:
            names.append(d.name)
    assert names == ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb", "b16.conv0", "b16.conv1",
                     "b16.torgb", "b32.conv0", "b32.conv1", "b32.torgb"]
    c = dict(zip((4, 8, 16, 32), CONFIGS["tiny"].channels))
    first = {d.name: d for d in reversed(layout)}
    assert first["b8.conv0"].resolution == 8 and first["b8.conv0"].kind == "conv"
    assert sum(1 for d in layout if d.name == "b8.conv0") == c[4]  # conv0 modulates the input channels
    assert sum(1 for d in layout if d.name == "b32.torgb") == c[32]
    assert {d.kind for d in layout if d.name.endswith("torgb")} == {"torgb"}
    assert all(d.channel == d.offset - first[d.name].offset for d in layout)


@pytest.mark.parametrize("layer_index", [0, 2, 5, 9])
def test_a_dimension_leaves_every_earlier_activation_unchanged(G, layer_index):
    z, y = _zy(G, 4)
    s = G.styles(G.mapping(z, y))
    table = G.style_layers()
    k = table[layer_index].start + 1
    moved = s.clone()
    moved[:, k] += 3.0
    before, after = [], []
    G.synthesis_network(s, "const", trace=before)
    G.synthesis_network(moved, "const", trace=after)
    for i, ((name, xa, ia), (_, xb, ib)) in enumerate(zip(before, after)):
        if i <= layer_index:  # everything entering layers up to and including ℓ is untouched
            assert torch.equal(xa, xb), name
            assert (ia is None and ib is None) or torch.equal(ia, ib), name
    # ... and the change does show up downstream
    assert not torch.allclose(G.synthesis_from_styles(s), G.synthesis_from_styles(moved))


@pytest.mark.parametrize("layer", ["b4.torgb", "b16.torgb", "b32.torgb"])
def test_torgb_dimension_moves_the_image_exactly_linearly(G, layer):
    z, y = _zy(G, 3)
    s = G.styles(G.mapping(z, y)).double()
    G64 = Generator(G.cfg).double().eval()
    G64.load_state_dict({k: v.double() for k, v in G.state_dict().items()})
    k = next(t for t in G64.style_layers() if t.name == layer).start + 2
    base = G64.synthesis_from_styles(s)
    unit = s.clone()
    unit[:, k] += 1.0
    direction = G64.synthesis_from_styles(unit) - base
    assert direction.abs().max() > 1e-6
    for t in (-7.5, 0.3, 12.0):
        moved = s.clone()
        moved[:, k] += t
        assert torch.allclose(G64.synthesis_from_styles(moved), base + t * direction, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("img_channels", [1, 3])
def test_torgb_batched_product_equals_the_modulated_1x1_conv(dtype, memory_format, img_channels):
    from failatlas.models.stylegan2 import ToRGB

    torch.manual_seed(0)
    layer = ToRGB(16, img_channels, 8, 8).to(dtype)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 16, 8, 8, dtype=dtype).contiguous(memory_format=memory_format)
    s = torch.randn(5, 16, dtype=dtype)
    spec = torch.nn.functional.conv2d(x * (s * layer.weight_gain)[:, :, None, None], layer.weight, layer.bias)
    out = layer(x, s)
    assert out.shape == (5, img_channels, 8, 8)
    assert torch.allclose(out, spec, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_conv_dimension_is_not_linear(G):
    z, y = _zy(G, 3)
    s = G.styles(G.mapping(z, y))
    k = G.style_layers()[2].start  # b8.conv0
    img = [G.synthesis_from_styles(s + t * torch.nn.functional.one_hot(torch.tensor(k), G.style_dim)) for t in (0, 1, 2)]
    assert (img[2] - 2 * img[1] + img[0]).abs().max() > 1e-4


def test_noise_modes(G):
    z, y = _zy(G, 2)
    w = G.mapping(z, y)
    assert torch.equal(G.synthesis(w, "const"), G.synthesis(w, "const"))
    torch.manual_seed(3)
    a = G.synthesis(w, "random")
    b = G.synthesis(w, "random")
    assert not torch.equal(a, b)
    assert not torch.allclose(G.synthesis(w, "none"), G.synthesis(w, "const"))
    with pytest.raises(FailatlasError, match="noise_mode"):
        G.synthesis(w, "loud")


@pytest.mark.parametrize("mode", ["const", "random", "none"])
def test_fused_style_conv_equals_the_plain_formula(G, mode):
    """The forward fuses demodulation, noise, bias, activation and its √2 gain into three passes; values
    and style gradients equal the step-by-step formula."""
    gen = torch.Generator().manual_seed(7)
    for layer in (layer for layer in G.synthesis_network.layers if layer.kind == "conv"):
        r_in = layer.resolution // 2 if layer.up else layer.resolution
        x = torch.randn(3, layer.in_channels, r_in, r_in, generator=gen).contiguous(memory_format=torch.channels_last)
        s = (torch.randn(3, layer.in_channels, generator=gen) + 1).requires_grad_(True)
        torch.manual_seed(11)
        fused = layer(x, s, mode)
        (g_fused,) = torch.autograd.grad(fused.square().sum(), s)
        torch.manual_seed(11)
        noise = {"const": layer.noise_const,
                 "random": torch.randn(3, 1, layer.resolution, layer.resolution),
                 "none": None}[mode]
        plain = style_conv_reference(layer, x, s, noise)
        (g_plain,) = torch.autograd.grad(plain.square().sum(), s)
        assert torch.allclose(fused, plain, atol=1e-5, rtol=1e-5)
        assert torch.allclose(g_fused, g_plain, atol=1e-4, rtol=1e-4)
        assert fused.is_contiguous(memory_format=torch.channels_last)


def test_fused_conv_layer_equals_conv_then_activation():
    import torch.nn.functional as F
    from failatlas.models.stylegan2 import SQRT2, Conv2dLayer
    torch.manual_seed(0)
    for bias, down in ((True, False), (False, True)):
        layer = Conv2dLayer(4, 6, 3, bias=bias, down=down)
        if bias:
            torch.nn.init.normal_(layer.bias)
        x = torch.randn(2, 4, 8, 8, requires_grad=True)
        plain_in = F.avg_pool2d(x, 2) if down else x
        plain = F.leaky_relu(F.conv2d(plain_in, layer.weight * layer.weight_gain, layer.bias, padding=1), 0.2) * SQRT2
        fused = layer(x)
        assert torch.allclose(fused, plain, atol=1e-5)
        assert torch.allclose(torch.autograd.grad(fused.sum(), x)[0], torch.autograd.grad(plain.sum(), x)[0], atol=1e-5)


def test_noise_amplitude_is_per_sample_and_can_vanish(G):
    """The noise amplitude of a conv layer is its constant strength plus a linear function of its own
    style: one image can be noise-free while another is noisy (the data is half clean, half noisy)."""
    G = copy.deepcopy(G)
    z, y = _zy(G, 2)
    s = G.styles(G.mapping(z, y))
    convs = [layer for layer in G.synthesis_network.layers if layer.kind == "conv"]
    table = {t.name: t for t in G.style_layers()}
    with torch.no_grad():
        for layer in convs:  # amplitude = style channel 0 of the layer, minus sample 0's value of it
            layer.noise_strength.zero_()
            layer.noise_gain.weight.zero_()
            layer.noise_gain.weight[0, 0] = 1.0 / layer.noise_gain.weight_gain
        for name, layer in zip(G.synthesis_network.names, G.synthesis_network.layers):
            if layer.kind == "conv":
                layer.noise_gain.bias.fill_(-float(s[0, table[name].start]))
    per_layer = dict(zip(G.synthesis_network.names, G.synthesis_network.split_styles(s)))
    amp = convs[-1].noise_amplitude(per_layer["b32.conv1"])
    assert amp.shape == (2, 1, 1, 1) and amp[0].abs().max() < 1e-6 and amp[1].abs().max() > 1e-3
    const, none = G.synthesis_from_styles(s, "const"), G.synthesis_from_styles(s, "none")
    assert torch.allclose(const[0], none[0], atol=1e-6)  # sample 0: no noise at all
    assert not torch.allclose(const[1], none[1], atol=1e-3)  # sample 1: noisy


def test_configs_without_noise_gain_still_load(G, tmp_path):
    """Generators saved before the per-sample noise gain existed (no key in config.json) load unchanged."""
    cfg = CONFIGS["tiny"].to_json()
    assert cfg["noise_gain"] is True and StyleGANConfig.from_json(cfg).noise_gain
    del cfg["noise_gain"]
    old = Generator(StyleGANConfig.from_json(cfg))
    assert not old.cfg.noise_gain and not any("noise_gain" in k for k in old.state_dict())
    save_generator(old, tmp_path / "old")
    z, y = _zy(old)
    assert torch.equal(load_generator(tmp_path / "old")(z, y), old.eval()(z, y))


def test_truncation_psi_zero_gives_w_avg(G):
    G = copy.deepcopy(G)  # the fixture is shared
    z, y = _zy(G)
    G.mapping_network.w_avg.normal_()
    w = G.mapping(z, y, truncation_psi=0.0)
    assert torch.allclose(w, G.mapping_network.w_avg.expand_as(w))


def test_bad_inputs_raise_clear_errors(G):
    z, y = _zy(G)
    with pytest.raises(FailatlasError, match=r"z must have shape \[N, 16\]"):
        G.mapping(torch.randn(6, 3), y)
    with pytest.raises(FailatlasError, match=r"labels must be in \[0, 10\)"):
        G.mapping(z, y + 10)
    with pytest.raises(FailatlasError, match="integer labels"):
        G.mapping(z, y.float())
    with pytest.raises(FailatlasError, match=r"styles must have shape \[N, 272\]"):
        G.synthesis_from_styles(torch.randn(2, 5))


def test_discriminator_shapes_and_odd_batches():
    torch.manual_seed(0)
    D = Discriminator(CONFIGS["tiny"])
    for n in (1, 3, 4, 6, 8):
        out = D(torch.randn(n, 1, 32, 32), torch.randint(0, 10, (n,)))
        assert out.shape == (n,) and torch.isfinite(out).all()
    x = torch.randn(8, 3, 4, 4)
    y = minibatch_stddev(x, 4)
    assert y.shape == (8, 4, 4, 4)
    assert torch.equal(y[:, :3], x)
    # the appended map is the mean std over each group of 4 consecutive samples: constant per sample,
    # shared in a group
    for grp in (slice(0, 4), slice(4, 8)):
        stat = x[grp].std(dim=0, unbiased=False).mean()
        assert torch.allclose(y[grp, -1], stat.expand(4, 4, 4), atol=1e-5)
    # groups never mix the two halves of [fakes; reals]: changing the second half leaves the first alone
    x2 = x.clone()
    x2[4:] *= 10
    assert torch.equal(minibatch_stddev(x2, 4)[:4], y[:4])
    # Projection conditioning: the label changes the score.
    img = torch.randn(4, 1, 32, 32)
    assert not torch.allclose(D(img, torch.zeros(4, dtype=torch.long)), D(img, torch.ones(4, dtype=torch.long)))


def test_save_load_round_trip(G, tmp_path):
    save_generator(G, tmp_path / "g")
    G2 = load_generator(tmp_path / "g")
    z, y = _zy(G)
    assert torch.equal(G(z, y), G2(z, y))
    assert not any(p.requires_grad for p in G2.parameters())
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["config.json", "generator.safetensors"]


def test_load_errors(G, tmp_path):
    with pytest.raises(FailatlasError, match="generator folder not found"):
        load_generator(tmp_path / "nope")
    folder = tmp_path / "g"
    save_generator(G, folder)
    weights = folder / "generator.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(FailatlasError, match="corrupt"):
        load_generator(folder)
    # weights of another config
    save_generator(Generator(StyleGANConfig(name="x", z_dim=16, w_dim=32, channels=(16, 16, 16, 16),
                                            d_channels=(16, 16, 16, 16), cmap_dim=16)), tmp_path / "other")
    weights.write_bytes((tmp_path / "other" / "generator.safetensors").read_bytes())
    with pytest.raises(FailatlasError, match="has shape"):
        load_generator(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(FailatlasError, match="not valid JSON"):
        load_generator(folder)


@pytest.mark.parametrize("key, value, phrase", [
    ("channels", [32, 32, 16, -16], "channels entry must be a whole number ≥ 1"),
    ("channels", [32, 32, 16, 0], "channels entry must be a whole number ≥ 1"),
    ("channels", "abcd", "channels must be a list"),
    ("num_classes", 0, "num_classes must be a whole number ≥ 1"),
    ("z_dim", "abc", "z_dim must be a whole number"),
    ("z_dim", 64.5, "z_dim must be a whole number"),
    ("resolution", "32", "resolution must be a whole number"),
    ("w_avg_beta", 2.0, "w_avg_beta must be a number in [0, 1]"),
    ("noise_gain", "yes", "noise_gain must be true or false"),
    (None, None, "must be a JSON object"),
])
def test_a_damaged_config_is_one_clear_error(G, tmp_path, one_error, key, value, phrase):
    """config.json edited by hand or damaged: a message naming the field, never a torch traceback."""
    import json

    folder = tmp_path / "g"
    save_generator(G, folder)
    meta = json.loads((folder / "config.json").read_text())
    if key is None:
        meta["config"] = None
    else:
        meta["config"][key] = value
    (folder / "config.json").write_text(json.dumps(meta))
    one_error(lambda: load_generator(folder), phrase)


@pytest.mark.parametrize("key, value, phrase", [
    ("w_dim", 10**12, "layer sizes no generator can have"),  # 10¹² × 10¹² weights: beyond even a shape's count
    ("w_dim", 10**7, "the config expects"),  # 10¹⁴ weights: would be 400 TB if the generator were built first
    ("mapping_layers", 10**7, "mapping_layers 10000000"),  # ten million layers: never built one by one
])
def test_a_config_of_impossible_sizes_is_compared_before_anything_is_allocated(G, tmp_path, one_error, key, value,
                                                                               phrase):
    """A damaged config.json with huge sizes is a mismatch with the weights, not torch's allocation error."""
    import json

    folder = tmp_path / "g"
    save_generator(G, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"][key] = value
    (folder / "config.json").write_text(json.dumps(meta))
    one_error(lambda: load_generator(folder), phrase)


def test_weights_missing_tensors_are_named_as_the_weights_fault(G, tmp_path, one_error):
    """A weights file that lost tensors is named by the keys it lacks; the intact config is not blamed (the
    guard against absurd mapping_layers once fired first and said to restore config.json)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "g"
    save_generator(G, folder)
    state = load_file(folder / "generator.safetensors")
    save_file({"mapping_network.w_avg": state["mapping_network.w_avg"]}, folder / "generator.safetensors")
    message = one_error(lambda: load_generator(folder), "do not match its config (missing")
    assert "mapping_layers" not in message


def test_weights_of_the_wrong_kind_are_refused(G, tmp_path, one_error):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "g"
    save_generator(G, folder)
    state = load_file(folder / "generator.safetensors")
    key = next(k for k, v in state.items() if v.is_floating_point())
    bad = dict(state, **{key: state[key].to(torch.int32)})
    save_file(bad, folder / "generator.safetensors")
    one_error(lambda: load_generator(folder), key, "dtype torch.int32")
    bad = dict(state, **{key: torch.full_like(state[key], float("nan"))})
    save_file(bad, folder / "generator.safetensors")
    one_error(lambda: load_generator(folder), key, "NaN or infinite")


def test_layer_of_dims_matches_the_layout(G):
    layer_of = G.synthesis_network.layer_of_dims()
    names = G.synthesis_network.names
    assert layer_of.shape == (G.style_dim,)
    assert [names[int(i)] for i in layer_of] == [d.name for d in G.style_layout()]


def test_noise_threshold_zero_is_the_plain_model_and_silences_small_amplitudes(G, tmp_path):
    """noise_threshold: a ↦ a − clamp(a, −t, t) per conv layer; t = 0 changes nothing, a sample whose
    amplitude is within t gets no noise at all, t learns (it has a gradient), and the option round-trips."""
    import dataclasses
    cfg = dataclasses.replace(G.cfg, noise_threshold=True)
    T = Generator(cfg).eval()
    missing, unexpected = T.load_state_dict(G.state_dict(), strict=False)
    assert not unexpected and missing and all(m.endswith("noise_threshold") for m in missing)
    z, y = _zy(G, 4)
    assert torch.equal(T(z, y), G.eval()(z, y))  # every threshold 0
    conv = T.synthesis_network.layers[T.synthesis_network.names.index("b32.conv1")]
    s = torch.randn(4, conv.in_channels)
    with torch.no_grad():
        conv.noise_gain.weight.normal_()  # amplitudes that differ between samples
        a = conv.noise_amplitude(s).flatten()  # threshold still 0
        t = float(a.abs().median())
        conv.noise_threshold.fill_(t)
    amp = conv.noise_amplitude(s).flatten()
    small = a.abs() <= t
    assert small.any() and (~small).any()
    assert torch.all(amp[small] == 0)
    assert torch.allclose(amp[~small], a[~small] - torch.sign(a[~small]) * t, atol=1e-6)
    conv.noise_amplitude(s).abs().sum().backward()
    assert conv.noise_threshold.grad is not None and float(conv.noise_threshold.grad) != 0.0
    save_generator(T, tmp_path / "thr")
    back = load_generator(tmp_path / "thr")
    assert back.cfg.noise_threshold and torch.equal(back(z, y), T(z, y))
    assert not StyleGANConfig.from_json({k: v for k, v in G.cfg.to_json().items()
                                         if k != "noise_threshold"}).noise_threshold


def test_wrong_widths_and_dtypes_are_one_clear_error(G, one_error):
    D, W = G.style_dim, G.w_dim
    one_error(lambda: G.synthesis_from_styles(torch.zeros(2, D, dtype=torch.float64)), "styles must be torch.float32",
              ".to(torch.float32)")
    one_error(lambda: G.synthesis_from_styles(torch.zeros(2, D, dtype=torch.int64)), "styles must be torch.float32")
    one_error(lambda: G.styles(torch.zeros(2, W + 1)), f"w must have shape [N, {W}]")
    num_ws = G.num_ws
    for wrong in (3, num_ws + 5):
        one_error(lambda: G.styles(torch.zeros(2, wrong, W)), f"[N, {num_ws}, {W}], one per style layer")
    assert G.styles(torch.zeros(2, num_ws, W)).shape == (2, G.style_dim)
    one_error(lambda: G.styles(torch.zeros(2, W, dtype=torch.float64)), "w must be torch.float32")
    assert G.synthesis_from_styles(G.styles(torch.zeros(2, W))).shape[0] == 2
