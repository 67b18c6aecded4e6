"""Triton selective scan vs the float64 step-by-step reference: outputs and every gradient.

On the CPU the kernels run under TRITON_INTERPRET=1 (small shapes); with a GPU the same tests
run on CUDA. Options are covered pairwise, not as a full cross product.
"""

import pytest
import torch
import torch.nn.functional as F

from genossm.kernels import (
    bidirectional_selective_scan,
    selective_scan,
    selective_scan_naive,
    selective_scan_ref,
    selective_scan_triton,
)
from genossm.kernels.scan import op


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Kernel outputs start as NaN: an element a kernel fails to write fails the comparison."""
    monkeypatch.setattr(op, "POISON_OUTPUTS", True)


CHUNK = 32
# relative-norm tolerance by input dtype (bf16/fp16 inputs are rounded before the reference sees them)
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def make_inputs(batch, length, dim, nstate, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    return dict(
        u=rnd(batch, length, dim).to(dtype),
        delta=rnd(batch, length, dim, scale=0.5).to(dtype),
        A=-(torch.rand(dim, nstate, generator=g) * 2 + 0.1).to(device),
        B=rnd(batch, length, nstate).to(dtype),
        C=rnd(batch, length, nstate).to(dtype),
        D=rnd(dim),
        z=rnd(batch, length, dim).to(dtype),
        delta_bias=rnd(dim, scale=0.2),
        initial_state=rnd(batch, dim, nstate),
    )


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# (length, dim, nstate, dtype, reverse, use_z, use_D, use_bias, softplus, initial, final)
CASES = [
    (1, 5, 1, torch.float32, False, True, True, True, True, True, True),
    (7, 5, 4, torch.float32, True, False, True, False, True, False, True),
    (CHUNK - 1, 16, 16, torch.float32, False, True, False, True, False, True, False),
    (CHUNK, 37, 4, torch.float32, True, True, True, True, True, True, True),
    (CHUNK + 1, 8, 16, torch.float32, False, False, False, False, False, False, False),
    (3 * CHUNK + 17, 20, 4, torch.float32, True, True, True, False, True, True, True),
    (3 * CHUNK + 17, 20, 16, torch.float32, False, True, True, True, True, True, True),
    (CHUNK + 1, 12, 4, torch.float16, False, True, True, True, True, True, True),
    (2 * CHUNK + 5, 12, 16, torch.float16, True, False, True, True, True, False, True),
    (CHUNK + 1, 12, 4, torch.bfloat16, True, True, True, True, True, True, True),
    (2 * CHUNK + 5, 9, 16, torch.bfloat16, False, True, False, True, True, True, False),
    # N not a power of two (masked state rows), D past one channel block
    (CHUNK + 1, 40, 3, torch.float32, True, True, True, True, True, True, True),
    (3 * CHUNK + 17, 12, 3, torch.bfloat16, False, True, False, True, True, True, False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"L{c[0]}-D{c[1]}-N{c[2]}-{str(c[3])[6:]}"
                         f"-{'rev' if c[4] else 'fwd'}")
def test_triton_scan_matches_reference(case, device):
    length, dim, nstate, dtype, reverse, use_z, use_D, use_bias, softplus, initial, final = case
    batch = 2 if length <= CHUNK + 1 else 1  # the interpreter is slow: long cases use batch 1
    x = make_inputs(batch, length, dim, nstate, dtype, device, seed=length * 31 + dim)
    opt = dict(D=x["D"] if use_D else None, z=x["z"] if use_z else None,
               delta_bias=x["delta_bias"] if use_bias else None,
               initial_state=x["initial_state"] if initial else None)
    names = ["u", "delta", "A", "B", "C"] + [k for k, v in opt.items() if v is not None]
    leaves = {k: x[k].clone().requires_grad_(True) for k in names}

    def call(fn, conv, **kw):
        args = {k: conv(leaves[k]) if k in leaves else None for k in ("u", "delta", "A", "B", "C")}
        extra = {k: conv(leaves[k]) for k in opt if k in leaves}
        return fn(**args, **extra, delta_softplus=softplus, return_final_state=True,
                  reverse=reverse, **kw)

    y, h = call(selective_scan_triton, lambda t: t, chunk_size=CHUNK)
    assert y.dtype == dtype and h.dtype == torch.float32
    assert not torch.isnan(y).any() and not torch.isnan(h).any()
    y_ref, h_ref = call(selective_scan_naive, lambda t: t.double())
    tol = TOL[dtype]
    assert rel(y, y_ref) < tol
    assert rel(h, h_ref) < tol
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(device)
    gh = torch.randn(h.shape, generator=torch.Generator().manual_seed(2)).to(device) if final else 0
    loss = (y.float() * gy).sum() + ((h * gh).sum() if final else 0)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    loss_ref = (y_ref * gy.double()).sum() + ((h_ref * gh.double()).sum() if final else 0)
    grads_ref = torch.autograd.grad(loss_ref, list(leaves.values()))
    for name, g, g_ref in zip(leaves, grads, grads_ref):
        assert g.dtype == leaves[name].dtype
        assert not torch.isnan(g).any(), name
        assert rel(g, g_ref) < tol * 4, (name, rel(g, g_ref))


@pytest.mark.parametrize("dtype,reverse", [(torch.float32, False), (torch.bfloat16, True)])
def test_lowest_delta_is_a_skipped_position(device, dtype, reverse):
    # the inference dt filter (genossm.model.dt_filter) sets delta to its dtype's lowest value:
    # softplus must give dt = 0 exactly (no decay, no write), with nothing overflowing to NaN
    x = make_inputs(1, 2 * CHUNK + 3, 8, 4, dtype, device, seed=11)
    skipped = torch.rand(x["delta"].shape, generator=torch.Generator().manual_seed(3)).to(device) < 0.7
    delta = x["delta"].masked_fill(skipped, torch.finfo(dtype).min)
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], initial_state=x["initial_state"],
              delta_softplus=True, return_final_state=True, reverse=reverse)
    y, h = selective_scan_triton(x["u"], delta, x["A"], x["B"], x["C"], chunk_size=CHUNK, **kw)
    assert not torch.isnan(y).any() and not torch.isnan(h).any()
    # the reference with the skipped positions' dt written as 0 directly (no softplus involved)
    dt = F.softplus(x["delta"].double() + x["delta_bias"].double()).masked_fill(skipped, 0)
    kw.update(delta_bias=None, delta_softplus=False)
    y_ref, h_ref = selective_scan_naive(x["u"].double(), dt, x["A"].double(), x["B"].double(),
                                        x["C"].double(), **{k: v.double() if torch.is_tensor(v) else v
                                                            for k, v in kw.items()})
    assert rel(y, y_ref) < TOL[dtype] and rel(h, h_ref) < TOL[dtype]


def test_other_super_block_size_matches_reference(device, monkeypatch):
    # 4 two-position groups per super-block instead of 8: other walk and look-ahead boundaries
    monkeypatch.setattr(op.TUNING, "groups", 4)
    assert_float32_scan_matches_naive(2 * CHUNK + 5, CHUNK, device, seed=19)


def assert_float32_scan_matches_naive(length, chunk, device, seed):
    """Output and gradients (u, delta, A, B, C, D) of a gated float32 scan with delta_bias and
    softplus against the float64 naive scan."""
    x = make_inputs(1, length, 12, 4, torch.float32, device, seed=seed)
    leaves = {k: x[k].clone().requires_grad_(True) for k in ("u", "delta", "A", "B", "C", "D")}
    kw = dict(z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True)
    y = selective_scan_triton(*leaves.values(), chunk_size=chunk, **kw)
    y_ref = selective_scan_naive(*[t.double() for t in leaves.values()], **kw)
    assert rel(y, y_ref) < TOL[torch.float32]
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    grads = torch.autograd.grad((y * gy).sum(), list(leaves.values()))
    grads_ref = torch.autograd.grad((y_ref * gy.double()).sum(), list(leaves.values()))
    for name, g, g_ref in zip(leaves, grads, grads_ref):
        assert rel(g, g_ref) < 4 * TOL[torch.float32], name


@pytest.mark.parametrize("chunk", [2 * CHUNK, 3 * CHUNK // 2])
def test_long_inputs_take_the_larger_backward_super_block(device, monkeypatch, chunk):
    """Past TUNING.long_from positions the backward walks super-blocks of long_groups groups where
    the chunk holds whole ones (chunk 64: 2 of 32 positions), else the usual ones (chunk 48)."""
    monkeypatch.setattr(op.TUNING, "long_from", 100)
    launched = []
    real_states = op.K._chunk_states

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, SB, FOR_BACKWARD, **kw):
                if FOR_BACKWARD:
                    launched.append(SB)
                return real_states[grid](*args, SB=SB, FOR_BACKWARD=FOR_BACKWARD, **kw)
            return launch

    monkeypatch.setattr(op.K, "_chunk_states", Spy())
    assert_float32_scan_matches_naive(3 * CHUNK + 17, chunk, device, seed=29)
    long_sb = 2 * op.TUNING.long_groups
    assert launched == [long_sb if chunk % long_sb == 0 else 2 * op.TUNING.groups]


def test_default_chunk_of_long_inputs_holds_whole_long_super_blocks():
    long_unit = 2 * op.TUNING.long_groups
    for batch, length in ((1, op.TUNING.long_from), (2, 3_000_017), (1, 4_194_304)):
        assert op.default_chunk_size(batch, length, 512, 32) % long_unit == 0
    assert op.default_chunk_size(1, 4096, 512, 32) % op.superblock() == 0


def test_chunk_size_must_cover_whole_super_blocks(device):
    x = make_inputs(1, 48, 8, 4, torch.float32, device, seed=4)
    bad = op.superblock() + op.superblock() // 2
    with pytest.raises(ValueError, match="multiple of"):
        selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], chunk_size=bad)
    one = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")]
    with pytest.raises(ValueError, match="multiple of"):
        bidirectional_selective_scan(*one, *one, x["z"], chunk_size=bad, impl="triton")


def test_chunked_reference_matches_naive(device):
    x = make_inputs(2, 150, 6, 4, torch.float64, device, seed=3)
    for reverse in (False, True):
        kw = dict(delta_softplus=True, return_final_state=True, reverse=reverse)
        y1, h1 = selective_scan_ref(**x, chunk_size=16, **kw)
        y2, h2 = selective_scan_naive(**x, **kw)
        assert rel(y1, y2) < 1e-12 and rel(h1, h2) < 1e-12


def test_public_op_dispatch_and_shapes(device):
    x = make_inputs(1, 40, 8, 4, torch.float32, device, seed=5)
    y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                       delta_bias=x["delta_bias"], delta_softplus=True)
    assert y.shape == x["u"].shape
    y_ref = selective_scan_naive(x["u"].double(), x["delta"].double(), x["A"], x["B"].double(),
                                 x["C"].double(), D=x["D"], z=x["z"].double(),
                                 delta_bias=x["delta_bias"], delta_softplus=True)
    assert rel(y, y_ref) < 1e-5
    with pytest.raises(ValueError, match="B, C must be"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"][:, :-1], x["C"])


# wrong shapes of the optional inputs for batch 2, L 9, D 6, N 3 (the kernels would read them
# out of bounds; the broadcastable z was taken by the CPU path)
WRONG_SHAPES = [pytest.param("z", lambda x: x["z"][..., :1], id="z-2x9x1"),
                pytest.param("D", lambda x: x["D"][:1], id="D-1"),
                pytest.param("delta_bias", lambda x: x["delta_bias"][:3], id="delta_bias-3"),
                pytest.param("initial_state", lambda x: x["initial_state"][:1], id="initial-1x6x3"),
                pytest.param("initial_state", lambda x: x["initial_state"].transpose(1, 2),
                             id="initial-2x3x6")]


@pytest.mark.parametrize("entry", [selective_scan_triton, selective_scan], ids=["triton", "public"])
@pytest.mark.parametrize("name,wrong", WRONG_SHAPES)
def test_optional_inputs_of_wrong_shape_raise(device, entry, name, wrong):
    x = make_inputs(2, 9, 6, 3, torch.float32, device, seed=6)
    with pytest.raises(ValueError, match=f"^{name} must be of shape"):
        entry(x["u"], x["delta"], x["A"], x["B"], x["C"], **{name: wrong(x)})


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("name", ["D_f", "bias_r", "z", "dt_weight_f"])
def test_bidirectional_inputs_of_wrong_shape_raise(device, impl, name):
    x, r = (make_inputs(1, 9, 6, 3, torch.float32, device, seed=s) for s in (6, 7))
    args = {f"{k}{s}": d[k] for s, d in (("_f", x), ("_r", r))
            for k in ("u", "delta", "A", "B", "C", "D")}
    args.update(bias_f=x["delta_bias"], bias_r=r["delta_bias"], z=x["z"],
                delta_f=x["delta"][..., :2], dt_weight_f=torch.ones(6, 2, device=device))
    args[name] = args[name][..., :1]
    with pytest.raises(ValueError, match=f"^{name} must be of shape"):
        bidirectional_selective_scan(**args, chunk_size=CHUNK, impl=impl)


def test_backward_is_deterministic(device):
    x = make_inputs(1, CHUNK + 3, 20, 16, torch.float32, device, seed=7)
    leaves = [x[k].clone().requires_grad_(True) for k in ("u", "delta", "A", "B", "C", "D")]
    gy = torch.randn(x["u"].shape, generator=torch.Generator().manual_seed(0)).to(device)

    def grads():
        y = selective_scan_triton(*leaves, z=x["z"], delta_bias=x["delta_bias"],
                                  delta_softplus=True, chunk_size=CHUNK)
        return torch.autograd.grad((y * gy).sum(), leaves)

    for a, b in zip(grads(), grads()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("out_projection", [False, True])
@pytest.mark.parametrize("dt_projection", [False, True])
def test_bidirectional_matches_two_reference_scans(device, out_projection, dt_projection):
    """Both directions summed and gated; with ``out_weight`` projected (whose backward recomputes
    the gated output), with ``dt_weight_*`` delta made from low-rank inputs inside the op."""
    g = torch.Generator().manual_seed(11)
    batch, length, dim, nstate, rank = 2, CHUNK + 13, 10, 4, 3

    def direction():
        delta_width = rank if dt_projection else dim
        return [torch.randn(batch, length, dim, generator=g),
                torch.randn(batch, length, delta_width, generator=g) * 0.5,
                -(torch.rand(dim, nstate, generator=g) + 0.1),
                torch.randn(batch, length, nstate, generator=g),
                torch.randn(batch, length, nstate, generator=g),
                torch.randn(dim, generator=g), torch.randn(dim, generator=g) * 0.1]

    leaves = [t.to(device).requires_grad_(True)
              for t in direction() + direction() + [torch.randn(batch, length, dim, generator=g)]]
    weights = {}
    if out_projection:
        weights["out_weight"] = torch.randn(6, dim, generator=g)
    if dt_projection:
        weights["dt_weight_f"] = torch.randn(dim, rank, generator=g) * 0.5
        weights["dt_weight_r"] = torch.randn(dim, rank, generator=g) * 0.5
    weights = {k: w.to(device).requires_grad_(True) for k, w in weights.items()}
    leaves += list(weights.values())
    scan_leaves = leaves[:15]
    out = bidirectional_selective_scan(*scan_leaves, delta_softplus=True, chunk_size=CHUNK,
                                       impl="triton", **weights)
    d = [t.double() for t in leaves]
    w = dict(zip(weights, d[15:]))
    delta_f, delta_r = d[1], d[8]
    if dt_projection:
        delta_f, delta_r = delta_f @ w["dt_weight_f"].t(), delta_r @ w["dt_weight_r"].t()
    y_f = selective_scan_naive(d[0], delta_f, *d[2:5], D=d[5], delta_bias=d[6],
                               delta_softplus=True)
    y_r = selective_scan_naive(d[7], delta_r, *d[9:12], D=d[12], delta_bias=d[13],
                               delta_softplus=True, reverse=True)
    ref = (y_f + y_r) * F.silu(d[14])
    if out_projection:
        ref = ref @ w["out_weight"].t()
    assert out.shape == ref.shape and rel(out, ref) < 2e-5
    go = torch.randn(out.shape, generator=g).to(device)
    grads = torch.autograd.grad((out * go).sum(), leaves)
    grads_ref = torch.autograd.grad((ref * go.double()).sum(), d)
    for i, (a, b) in enumerate(zip(grads, grads_ref)):
        assert rel(a, b) < 1e-4, (i, rel(a, b))
    torch_path = bidirectional_selective_scan(*scan_leaves, delta_softplus=True, impl="torch",
                                              **weights)
    assert rel(torch_path, ref) < 2e-5


def test_torch_compile_traces_the_op(device):
    x = make_inputs(1, 40, 8, 4, torch.float32, device, seed=9)

    def f(u, delta):
        return selective_scan_triton(u, delta, x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                                     delta_softplus=True, chunk_size=CHUNK).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    u = x["u"].clone().requires_grad_(True)
    val = compiled(u, x["delta"])
    val.backward()
    u2 = x["u"].clone().requires_grad_(True)
    f(u2, x["delta"]).backward()
    assert torch.allclose(val, f(x["u"], x["delta"]))
    assert torch.allclose(u.grad, u2.grad)


def test_opcheck_fake_kernels_and_autograd(device):
    # the fake (meta) kernels must promise the shapes, dtypes and strides the real ones return
    # (torch.compile's Inductor asserts them); opcheck also checks the autograd registration
    x = make_inputs(1, 2 * CHUNK, 8, 4, torch.float32, device, seed=21)
    leaf = lambda t: None if t is None else t.clone().requires_grad_(True)
    dout = torch.randn(x["u"].shape, generator=torch.Generator().manual_seed(0)).to(device)
    # all optional inputs given; none (three absent gradients, which must not alias)
    for optional in ((x["D"], x["z"], x["delta_bias"]), (None, None, None)):
        args = (leaf(x["u"]), leaf(x["delta"]), leaf(x["A"]), leaf(x["B"]), leaf(x["C"]),
                *map(leaf, optional), None, True, False, CHUNK)
        torch.library.opcheck(op._selective_scan_fwd, args, test_utils=(
            "test_schema", "test_faketensor", "test_autograd_registration"))
        with torch.no_grad():
            _, ypre, _, h_in, dtsum = op._selective_scan_fwd(
                *[a.detach() if torch.is_tensor(a) else a for a in args])
        bwd_args = (dout, None, x["u"], x["delta"], x["A"], x["B"], x["C"], *optional, ypre, h_in,
                    dtsum, True, False, CHUNK)
        torch.library.opcheck(op._selective_scan_bwd, bwd_args,
                              test_utils=("test_schema", "test_faketensor"))


def test_opcheck_bidirectional_fake_kernels(device):
    from genossm.kernels.scan import bidirectional as bi

    x, r = (make_inputs(1, 2 * CHUNK, 8, 4, torch.float32, device, seed=s) for s in (22, 23))
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(5, 8, generator=gen).to(device),
               torch.randn(8, 3, generator=gen).to(device), torch.randn(8, 3, generator=gen).to(device)]
    for given in ((False, False, False), (True, True, True), (False, True, True)):
        low_rank = lambda d: d["delta"][..., :3].contiguous() if given[1] else d["delta"]
        per_dir = lambda d: [d["u"], low_rank(d), d["A"], d["B"], d["C"], d["D"], d["delta_bias"]]
        tensors = per_dir(x) + per_dir(r) + [x["z"]] + [w if g else None for w, g in zip(weights, given)]
        leaves = [t if t is None else t.clone().requires_grad_(True) for t in tensors]
        torch.library.opcheck(bi._bidir_fwd, (*leaves, True, CHUNK),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
        out, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r = bi._bidir_fwd(*tensors, True, CHUNK)
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(device)
        torch.library.opcheck(bi._bidir_bwd, (dout, *tensors, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r,
                                              True, CHUNK),
                              test_utils=("test_schema", "test_faketensor"))


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@gpu
@pytest.mark.gpu
def test_million_base_scan_matches_chunked_reference():
    x = make_inputs(1, 1 << 20, 64, 16, torch.bfloat16, "cuda", seed=13)
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True,
              return_final_state=True)
    for reverse in (False, True):
        y, h = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], reverse=reverse, **kw)
        y_ref, h_ref = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"],
                                          reverse=reverse, chunk_size=1024, **kw)
        assert rel(y, y_ref) < 1e-2 and rel(h, h_ref) < 1e-3


@gpu
@pytest.mark.gpu
def test_int64_offsets_beyond_2_pow_31():
    # batch * L * D = 2^22 * 520 > 2^31: compare the last 32 channels against a run on those
    # alone (channels are independent), whose offsets are small.
    length, dim = 1 << 22, 520
    x = make_inputs(1, 16, dim, 4, torch.bfloat16, "cuda", seed=17)
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(1, length, dim, device="cuda", dtype=torch.bfloat16, generator=g)
    delta = torch.randn(1, length, dim, device="cuda", dtype=torch.bfloat16, generator=g) * 0.5
    B = torch.randn(1, length, 4, device="cuda", dtype=torch.bfloat16, generator=g)
    C = torch.randn(1, length, 4, device="cuda", dtype=torch.bfloat16, generator=g)
    y = selective_scan_triton(u, delta, x["A"], B, C, D=x["D"], delta_softplus=True,
                              chunk_size=4096)
    tail = slice(dim - 32, dim)
    y_tail = selective_scan_triton(u[..., tail].contiguous(), delta[..., tail].contiguous(),
                                   x["A"][tail].contiguous(), B, C, D=x["D"][tail].contiguous(),
                                   delta_softplus=True, chunk_size=4096)
    # a wrapped 32-bit offset would read other channels' data: far beyond bf16 rounding
    torch.testing.assert_close(y[..., tail], y_tail, rtol=1e-2, atol=1e-2)


@gpu
@pytest.mark.gpu
def test_new_lengths_and_chunk_sizes_reuse_compiled_kernels():
    # lengths, chunk counts and chunk sizes are runtime arguments Triton does not specialize on
    # (it would on divisibility by 16 and on 1): a model fed windows of many lengths (training on
    # random lengths, scoring at several contexts) must not compile new kernels for each
    from genossm.kernels.scan import triton_scan as K

    kernels = (K._chunk_states, K._pass_states, K._chunk_scan_fwd, K._chunk_adjoints, K._chunk_scan_bwd)
    device = torch.cuda.current_device()

    def compiled():
        return sum(len(k.device_caches[device][0]) for k in kernels)

    counts = []
    for length, chunks in ((4096, 2), (4100, 4), (4111, 8), (37, 64)):  # last: a single chunk
        x = make_inputs(1, length, 64, 16, torch.bfloat16, "cuda", seed=23)
        leaves = [x[k].clone().requires_grad_(True) for k in ("u", "delta", "A", "B", "C")]
        y = selective_scan_triton(*leaves, chunk_size=chunks * op.superblock(), delta_softplus=True)
        y.float().sum().backward()
        counts.append(compiled())
    assert counts[0] > 0 and counts[1:] == counts[:1] * 3


def test_scan_ops_report_flops():
    # the compile partitioner prices recomputation by flops: without a formula the scan is "free"
    from torch.utils.flop_counter import FlopCounterMode

    from genossm.kernels.scan.flops import BWD_FLOPS, FWD_FLOPS

    batch, length, dim, nstate = 2, 96, 8, 4
    meta = dict(device="meta")
    u, delta, z = (torch.empty(batch, length, dim, dtype=torch.bfloat16, **meta) for _ in range(3))
    A, B, C = torch.empty(dim, nstate, **meta), *(torch.empty(batch, length, nstate, **meta) for _ in range(2))
    Dskip, bias = torch.empty(dim, **meta), torch.empty(dim, **meta)
    elements = batch * length * dim * nstate
    ops = torch.ops.genossm
    with FlopCounterMode(display=False) as counter:
        out = ops.selective_scan_fwd(u, delta, A, B, C, Dskip, z, bias, None, True, False, 32)
    assert counter.get_total_flops() == FWD_FLOPS * elements
    _, ypre, _, h_in, dtsum = out
    with FlopCounterMode(display=False) as counter:
        ops.selective_scan_bwd(u, None, u, delta, A, B, C, Dskip, z, bias, ypre, h_in, dtsum, True, False, 32)
    assert counter.get_total_flops() == BWD_FLOPS * elements
    low = torch.empty(batch, length, 3, dtype=torch.bfloat16, **meta)  # dt_rank 3
    out_w, dt_w = torch.empty(5, dim, **meta), torch.empty(dim, 3, **meta)
    matmul = lambda weight: 2 * batch * length * weight.shape[0] * weight.shape[1]
    # no projections; the output one (a matmul, three in backward: the weight's gradient and the
    # gated output's, made twice); the dt ones too (each remade in backward, then two gradients)
    for out_weight, d_in, dt_weight, extra_fwd, extra_bwd in (
            (None, delta, None, 0, 0),
            (out_w, delta, None, matmul(out_w), 3 * matmul(out_w)),
            (out_w, low, dt_w, matmul(out_w) + 2 * matmul(dt_w),
             3 * matmul(out_w) + 6 * matmul(dt_w))):
        args = (u, d_in, A, B, C, Dskip, bias, u, d_in, A, B, C, Dskip, bias, z, out_weight,
                dt_weight, dt_weight)
        with FlopCounterMode(display=False) as counter:
            out = ops.bidirectional_scan_fwd(*args, True, 32)
        assert counter.get_total_flops() == 2 * FWD_FLOPS * elements + extra_fwd
        with FlopCounterMode(display=False) as counter:
            ops.bidirectional_scan_bwd(out[0], *args, *out[1:], True, 32)
        assert counter.get_total_flops() == 2 * BWD_FLOPS * elements + extra_bwd
