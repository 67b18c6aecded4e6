"""One forward + backward of the selective scan at a given length, for profilers (ncu/nsys).

    ncu --clock-control none --section WarpStateStats -k regex:_chunk python benchmarks/profile_scan.py
"""

import argparse

import torch

from genossm.kernels import selective_scan

ap = argparse.ArgumentParser()
ap.add_argument("--length", type=int, default=262144)
ap.add_argument("--dim", type=int, default=512)
ap.add_argument("--state", type=int, default=16)
args = ap.parse_args()
g = torch.Generator(device="cuda").manual_seed(0)
shape = (1, args.length, args.dim)
u, delta, z = (torch.randn(*shape, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
               for _ in range(3))
B, C = (torch.randn(1, args.length, args.state, device="cuda", generator=g).to(torch.bfloat16)
        for _ in range(2))
A = -(torch.rand(args.dim, args.state, device="cuda", generator=g) + 0.5)
D = torch.randn(args.dim, device="cuda", generator=g)
y = selective_scan(u, delta, A, B, C, D=D, z=z, delta_softplus=True)
y.float().sum().backward()
torch.cuda.synchronize()
