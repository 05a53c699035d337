"""Fused DenseNet layer in Triton: ``conv3x3(elu(conv1x1(x) + b1)) + b3`` in one kernel.

Layering: this module holds the ``@triton.jit`` kernel and a thin host launcher
(:func:`launch_dense_layer`) working on plain tensors.  Validation, the ``torch.library`` op
registration and autograd live in ``fastreshuffle/ops/dense.py``; the network in
``fastreshuffle/nn/fast.py``.

Tiling (see ``docs/dense_layer.md``)
-----------------------------------
Each program owns an output tile of ``TILE_H x TILE_W`` pixels x ``BLOCK_N`` output channels
of one image.  The ``k*N`` bottleneck intermediate is produced ``BLOCK_K`` channels at a time
for the *halo* tile ``(TILE_H+2) x (TILE_W+2)`` (the 1-pixel halo is recomputed by the
neighbouring tiles instead of being exchanged), written to a small per-program scratch slot
(``HP_PAD x BLOCK_K`` elements, L1/L2 resident, reused for every chunk and every tile of the
persistent loop), and immediately consumed by the nine shifted ``[P, BLOCK_K] @ [BLOCK_K,
BLOCK_N]`` products of the 3x3 convolution.  The full ``k*N x H x W`` intermediate never
exists in global memory.  The scratch is needed because Triton cannot shift a register tile
by one pixel; a CTA barrier separates producing and consuming a chunk.

Accumulation is always fp32.  Buffers may be fp32, fp16 or bf16; fp32 dots use IEEE fp32
unless ``allow_tf32``.  Any strides are accepted (NCHW, channels_last, channel slices of a
larger buffer) and all address arithmetic is done in int64.

``RESHUFFLE`` mode: the input is read through the reshuffle-up (pixel_shuffle by 2) index map
of the previous stage tensor ``src`` (Eq. 4: ``Y[c, i, j] = X[4c + 2(i%2) + (j%2), i//2, j//2]``)
and the reshuffled values of each program's own (non-halo) pixels are stored into the buffer
prefix on the way, so the first layer of a block also materialises the block input.
"""
from __future__ import annotations

import contextlib

import triton
import triton.language as tl


@triton.jit
def _dense_layer_kernel(
    x_ptr, sxb, sxc, sxh, sxw,          # layer input (buffer prefix) or reshuffle source
    y_ptr, syb, syc, syh, syw,          # output channels (buffer slice)
    p_ptr, spb, spc, sph, spw,          # RESHUFFLE: where the reshuffled input is stored
    w1_ptr, sw1k, sw1m,                 # 1x1 weight viewed as [K, M]
    b1_ptr,
    w3_ptr, sw3n, sw3k, sw3h, sw3w,     # 3x3 weight [N, K, 3, 3]
    b3_ptr,
    s_ptr, SLOT_STRIDE,                 # scratch: one slot of HP_PAD*BLOCK_K elements per program
    B, M, K, N, H, W,
    RESHUFFLE: tl.constexpr,
    PREC: tl.constexpr,                 # "ieee" or "tf32" (only matters for fp32 buffers)
    TILE_H: tl.constexpr, TILE_W: tl.constexpr,
    BLOCK_HP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    HALO_W: tl.constexpr = TILE_W + 2
    HALO_P: tl.constexpr = (TILE_H + 2) * (TILE_W + 2)
    HP_PAD: tl.constexpr = ((HALO_P + BLOCK_HP - 1) // BLOCK_HP) * BLOCK_HP
    P: tl.constexpr = TILE_H * TILE_W

    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    tiles_h = tl.cdiv(H, TILE_H)
    tiles_w = tl.cdiv(W, TILE_W)
    n_blocks = tl.cdiv(N, BLOCK_N)
    num_tiles = B * tiles_h * tiles_w * n_blocks

    slot = s_ptr + pid.to(tl.int64) * SLOT_STRIDE
    dt = s_ptr.dtype.element_ty

    r_hp = tl.arange(0, BLOCK_HP)
    r_m = tl.arange(0, BLOCK_M)
    r_k = tl.arange(0, BLOCK_K)
    r_n = tl.arange(0, BLOCK_N)
    r_p = tl.arange(0, P)
    py = r_p // TILE_W
    px = r_p % TILE_W

    for tile in range(pid, num_tiles, nprog):
        nb = tile % n_blocks
        t = tile // n_blocks
        tw = t % tiles_w
        t = t // tiles_w
        th = t % tiles_h
        b = (t // tiles_h).to(tl.int64)
        h0 = th * TILE_H
        w0 = tw * TILE_W
        offs_n = nb * BLOCK_N + r_n
        n_mask = offs_n < N

        acc = tl.zeros([P, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + r_k
            k_mask = offs_k < K
            bias1 = tl.load(b1_ptr + offs_k, mask=k_mask, other=0.0).to(tl.float32)
            # ---- stage 1: intermediate chunk for the halo tile -> scratch slot
            for hp0 in tl.static_range(0, HP_PAD, BLOCK_HP):
                hp = hp0 + r_hp
                hy = h0 - 1 + hp // HALO_W
                hx = w0 - 1 + hp % HALO_W
                valid = (hp < HALO_P) & (hy >= 0) & (hy < H) & (hx >= 0) & (hx < W)
                hy64 = hy.to(tl.int64)
                hx64 = hx.to(tl.int64)
                if RESHUFFLE:
                    # owner of the pixel stores the reshuffled input once (first K chunk, first N block)
                    own = valid & (hy >= h0) & (hy < h0 + TILE_H) & (hx >= w0) & (hx < w0 + TILE_W)
                    own = own & ((tl.zeros_like(hp) + k0 + nb) == 0)
                    sub = (2 * (hy % 2) + (hx % 2)).to(tl.int64)
                    x_row = x_ptr + b * sxb + (hy64 // 2) * sxh + (hx64 // 2) * sxw + sub * sxc
                    p_row = p_ptr + b * spb + hy64 * sph + hx64 * spw
                else:
                    x_row = x_ptr + b * sxb + hy64 * sxh + hx64 * sxw
                acc1 = tl.zeros([BLOCK_HP, BLOCK_K], dtype=tl.float32)
                for m0 in range(0, M, BLOCK_M):
                    offs_m = (m0 + r_m).to(tl.int64)
                    m_mask = offs_m < M
                    xm = valid[:, None] & m_mask[None, :]
                    if RESHUFFLE:
                        xt = tl.load(x_row[:, None] + (4 * offs_m)[None, :] * sxc, mask=xm, other=0.0)
                        tl.store(p_row[:, None] + offs_m[None, :] * spc, xt,
                                 mask=own[:, None] & m_mask[None, :])
                    else:
                        xt = tl.load(x_row[:, None] + offs_m[None, :] * sxc, mask=xm, other=0.0)
                    w1t = tl.load(w1_ptr + offs_k[None, :] * sw1k + offs_m[:, None] * sw1m,
                                  mask=m_mask[:, None] & k_mask[None, :], other=0.0)
                    acc1 = tl.dot(xt.to(dt), w1t.to(dt), acc1, input_precision=PREC)
                acc1 = acc1 + bias1[None, :]
                e = tl.where(acc1 > 0, acc1, tl.exp(tl.minimum(acc1, 0.0)) - 1.0)
                # the 3x3 conv zero-pads the intermediate: pixels outside the image are 0
                e = tl.where(valid[:, None], e, 0.0)
                tl.store(slot + hp[:, None] * BLOCK_K + r_k[None, :], e.to(dt))
            tl.debug_barrier()
            # ---- stage 2: nine shifted products of the 3x3 conv
            for tap in tl.static_range(9):
                dy = tap // 3
                dx = tap % 3
                hp = (py + dy) * HALO_W + (px + dx)
                et = tl.load(slot + hp[:, None] * BLOCK_K + r_k[None, :], cache_modifier=".cg")
                w3t = tl.load(w3_ptr + offs_n[None, :] * sw3n + offs_k[:, None] * sw3k + dy * sw3h + dx * sw3w,
                              mask=k_mask[:, None] & n_mask[None, :], other=0.0)
                acc = tl.dot(et, w3t.to(dt), acc, input_precision=PREC)
            tl.debug_barrier()   # the slot is overwritten by the next chunk

        bias3 = tl.load(b3_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        acc = acc + bias3[None, :]
        oy = h0 + py
        ox = w0 + px
        o_mask = ((oy < H) & (ox < W))[:, None] & n_mask[None, :]
        y_addr = (y_ptr + b * syb + oy.to(tl.int64)[:, None] * syh + ox.to(tl.int64)[:, None] * syw
                  + offs_n.to(tl.int64)[None, :] * syc)
        tl.store(y_addr, acc.to(y_ptr.dtype.element_ty), mask=o_mask)


def _cfg(th, tw, hp, bm, bk, bn, warps, stages=1):
    return triton.Config(dict(TILE_H=th, TILE_W=tw, BLOCK_HP=hp, BLOCK_M=bm, BLOCK_K=bk, BLOCK_N=bn),
                         num_warps=warps, num_stages=stages)


# GPU autotuning space: only configurations that ran clean natively in fp32, fp16 and bf16
# (the record of each GPU run is docs/gpu_runs.md).  BLOCK_N is capped by the launcher at
# next_pow2(N) via prune.
AUTOTUNE_CONFIGS = [
    _cfg(8, 16, 64, 32, 32, 64, 8),     # N = 64 (first block of the paper preset)
    _cfg(16, 16, 64, 32, 32, 64, 8),
    _cfg(8, 8, 32, 32, 32, 32, 4),      # N = 32
    _cfg(8, 16, 64, 16, 32, 16, 4),     # N = 16
    _cfg(4, 8, 32, 16, 16, 16, 4),
]

# Candidates left out of autotuning until validated on a GPU (a 16-bit autotuning fault was
# seen over a space containing them; docs/gpu_runs.md).  ``python -m
# benchmarks.probe_triton_configs`` runs each in its own process and reports which are safe.
CANDIDATE_CONFIGS = [
    _cfg(8, 16, 64, 32, 32, 64, 4),
    _cfg(8, 16, 64, 64, 32, 64, 4, 2),
    _cfg(8, 16, 64, 32, 64, 64, 8),
    _cfg(8, 32, 64, 32, 32, 64, 8),
    _cfg(4, 16, 32, 32, 32, 16, 4),
    _cfg(8, 16, 128, 32, 32, 16, 4),
]


def _prune(configs, named_args, **kwargs):
    n = named_args["N"]
    cap = max(16, triton.next_power_of_2(n))
    kept = [c for c in configs if c.kwargs["BLOCK_N"] <= cap]
    # keep configs whose BLOCK_N covers N (no recomputation across N blocks) when there are any
    full = [c for c in kept if c.kwargs["BLOCK_N"] >= min(n, 64)]
    return full or kept or configs[:1]


_dense_layer_kernel_tuned = triton.autotune(
    configs=AUTOTUNE_CONFIGS, key=["M", "N", "H", "W", "RESHUFFLE", "PREC"],
    prune_configs_by={"early_config_prune": _prune},
)(_dense_layer_kernel)


def slot_elems(cfg) -> int:
    kw = cfg.kwargs if hasattr(cfg, "kwargs") else cfg
    halo = (kw["TILE_H"] + 2) * (kw["TILE_W"] + 2)
    return triton.cdiv(halo, kw["BLOCK_HP"]) * kw["BLOCK_HP"] * kw["BLOCK_K"]


MAX_SLOT = max(slot_elems(c) for c in AUTOTUNE_CONFIGS)


def num_tiles(B, N, H, W, meta) -> int:
    return (B * triton.cdiv(H, meta["TILE_H"]) * triton.cdiv(W, meta["TILE_W"])
            * triton.cdiv(N, meta["BLOCK_N"]))


def launch_dense_layer(x, y, w1, b1, w3, b3, *, prefix_out=None, scratch=None, num_slots=None,
                       config=None, allow_tf32=False, wrap=None):
    """Launch the fused kernel on plain tensors (no validation; see ``fastreshuffle.ops.dense_layer``).

    x:  ``[B, M, H, W]`` layer input, any strides; with ``prefix_out`` given it is instead the
        reshuffle source ``[B, 4M, H/2, W/2]`` and the reshuffled input is stored into
        ``prefix_out`` ``[B, M, H, W]``.
    y:  ``[B, N, H, W]`` output view (any strides), written in place.
    w1: ``[K, M, 1, 1]``, w3: ``[N, K, 3, 3]``, b1 ``[K]``, b3 ``[N]``.
    scratch: 1-D tensor of the buffer dtype with ``num_slots * slot`` elements; allocated here
        when None.  ``config``: a dict of meta-parameters (plus optional ``num_warps``) to
        bypass autotuning (used by the interpreter tests).  ``wrap``: ``torch.library.wrap_triton``
        when called from inside the registered op.
    """
    import torch

    B, N, H, W = y.shape
    K = w1.shape[0]
    M = w1.shape[1]
    reshuffle = prefix_out is not None
    p = prefix_out if reshuffle else y
    w1v = w1.reshape(K, M)
    b1, b3 = b1.contiguous(), b3.contiguous()     # the kernel reads the biases with unit stride
    if config is not None:
        cfg = dict(config)
        num_warps = cfg.pop("num_warps", 4)
        num_stages = cfg.pop("num_stages", 1)
        slot = slot_elems(cfg)
    else:
        slot = MAX_SLOT
    if num_slots is None:
        if y.is_cuda:
            sms = torch.cuda.get_device_properties(y.device).multi_processor_count
            num_slots = 4 * sms
        else:
            num_slots = 4
    if scratch is None:
        scratch = torch.empty(num_slots * slot, dtype=y.dtype, device=y.device)

    # IEEE only matters for fp32 operands; 16-bit operands always use the tensor cores
    prec = "ieee" if (y.dtype == torch.float32 and not allow_tf32) else "tf32"

    def grid(meta):
        return (max(1, min(num_slots, num_tiles(B, N, H, W, meta))),)

    args = (x, *x.stride(), y, *y.stride(), p, *p.stride(), w1v, *w1v.stride(), b1,
            w3, *w3.stride(), b3, scratch, slot, B, M, K, N, H, W)
    # Triton launches on the current device and its stream: make that the buffer's (a buffer on
    # cuda:1 while cuda:0 is current would otherwise run on the wrong device)
    on_device = (torch.cuda.device(y.device) if y.is_cuda and y.device.index != torch.cuda.current_device()
                 else contextlib.nullcontext())
    with on_device:
        if config is not None:
            kern = _dense_layer_kernel if wrap is None else wrap(_dense_layer_kernel)
            kern[grid](*args, RESHUFFLE=reshuffle, PREC=prec, num_warps=num_warps,
                       num_stages=num_stages, **cfg)
        else:
            kern = _dense_layer_kernel_tuned if wrap is None else wrap(_dense_layer_kernel_tuned)
            kern[grid](*args, RESHUFFLE=reshuffle, PREC=prec)
    return y
