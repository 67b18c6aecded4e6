"""Shared by tests/test_predict*.py and tests/test_embed*.py: a tiny random model, small genomes and
VCFs, and scores computed by hand from the model's logits (independently of genossm.score)."""

import numpy as np
import torch

from genossm.model import GenoSSM, GenoSSMConfig
from genossm.tokenize import MASK, PAD, encode, reverse_complement


def save_model(path, context_length: int = 64, seed: int = 0, **config):
    """A small random model saved with save_pretrained; returns (path, model).

    Weights are redrawn at unit scale (the training init is deliberately tiny), so that
    log-probabilities differ by O(1) between bases and depend on the context: score tests can
    then tell a right window or strand from a wrong one.
    """
    torch.manual_seed(seed)
    options = {"d_model": 8, "n_layer": 2, "d_state": 4, "expand": 1, **config}  # fast on CPU
    model = GenoSSM(GenoSSMConfig(context_length=context_length, **options)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=module.in_features**-0.5)
            elif isinstance(module, torch.nn.Embedding):
                torch.nn.init.normal_(module.weight, std=1.0)
    model.save_pretrained(path)
    return path, model


def random_sequence(length: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, length)].tobytes().decode()


def reverse_complement_text(seq: str) -> str:
    return seq[::-1].translate(str.maketrans("ACGTacgtN", "TGCAtgcaN"))


def write_fasta(path, sequences: dict, descriptions: dict | None = None):
    descriptions = descriptions or {}
    with open(path, "w") as fh:
        for name, seq in sequences.items():
            header = f"{name} {descriptions[name]}" if name in descriptions else name
            fh.write(f">{header}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return path


def write_vcf(path, contigs: dict, rows):
    """rows: (chrom, pos 1-based, id, ref, alt); contigs: {name: length or None} for ##contig lines."""
    lines = ["##fileformat=VCFv4.2"]
    for name, length in contigs.items():
        lines.append(f"##contig=<ID={name},length={length}>" if length else f"##contig=<ID={name}>")
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    lines += [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\t." for c, p, i, r, a in rows]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def window_ids(seq: str, start: int, length: int, circular: bool = False) -> np.ndarray:
    """Token ids of seq over [start, start + length): PAD outside a linear contig, wrapped on a circular one."""
    ids = encode(seq)
    positions = np.arange(start, start + length)
    if circular:
        return ids[positions % len(seq)]
    out = np.full(length, PAD, np.uint8)
    inside = (positions >= 0) & (positions < len(seq))
    out[inside] = ids[positions[inside]]
    return out


def logp(model, ids: np.ndarray) -> np.ndarray:
    """(L, 4) log-probabilities over A, C, G, T from the model's logits."""
    with torch.no_grad():
        logits = model(torch.as_tensor(ids[None]).long())[0]
    return logits[:, :4].double().log_softmax(-1).numpy()


def hidden(model, ids: np.ndarray, layer: int) -> np.ndarray:
    with torch.no_grad():
        _, states = model(torch.as_tensor(ids[None]).long(), output_hidden_states=True)
    return states[layer][0].double().numpy()


def hand_llr(model, ref_window, alt_window, offset: int, ref_bases: str, alt_bases: str) -> float:
    """The documented llr: span masked in both haplotype windows, alt minus ref summed log-probs,
    averaged over the forward and reverse-complement strands, over the span positions where both
    haplotypes have a base (a string shorter than the span ends at the contig end)."""
    m = max(len(ref_bases), len(alt_bases))
    codes = [encode(bases) for bases in (ref_bases, alt_bases)]
    both = [i for i in range(m) if all(i < len(c) and c[i] < 4 for c in codes)]
    total = 0.0
    for window, bases, sign in ((ref_window, codes[0], -1), (alt_window, codes[1], 1)):
        masked = window.copy()
        masked[offset : offset + m] = MASK
        forward, reverse = logp(model, masked), logp(model, reverse_complement(masked))
        n = len(masked)
        for i in both:
            total += sign * (forward[offset + i, bases[i]] + reverse[n - 1 - offset - i, 3 - bases[i]]) / 2
    return total