"""GenoSSM: token embedding -> n_layer bidirectional selective-SSM blocks -> norm -> tied MLM head.

With ``rc_equivariant=True`` the model is exactly reverse-complement equivariant by parameter
sharing (Caduceus-PS construction): d_model splits into a forward-strand stream and a
reverse-complement stream of d_model/2 channels each; the same blocks run on the sequence and on
its reverse complement, and the tied head reads base a at position i as
``E[a] . h_fwd[i] + E[comp(a)] . h_rc[L-1-i]``. Hence
``logits(RC(x))[i, a] == logits(x)[L-1-i, comp(a)]``. Hidden states are the two streams
concatenated (the RC stream flipped back to forward coordinates).
"""

import json
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from genossm.model.config import GenoSSMConfig
from genossm.model.mixer import Block, RMSNorm
from genossm.model.offload import HostCheckpoints, offloaded_block
from genossm.tokenize import COMPLEMENT


class GenoSSM(nn.Module):
    def __init__(self, config: GenoSSMConfig):
        super().__init__()
        self.config = config
        width = config.stream_width
        self.embedding = nn.Embedding(config.vocab_size, width)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(width, config.norm_eps)
        self.register_buffer("complement", torch.as_tensor(COMPLEMENT, dtype=torch.long),
                             persistent=False)
        self._init_weights()

    def _init_weights(self):
        nn.init.normal_(self.embedding.weight, std=0.02)
        for layer in self.layers:
            for lin in (layer.mixer.in_proj, layer.mixer.out_proj, layer.mixer.fwd.x_proj,
                        layer.mixer.rev.x_proj):
                nn.init.normal_(lin.weight, std=0.02)
            # GPT-2 style: scale residual-branch outputs by depth
            layer.mixer.out_proj.weight.data /= (2 * self.config.n_layer) ** 0.5

    def _trunk(self, ids, output_hidden_states):
        hidden = self.embedding(ids)  # (B, L, W)
        states = [hidden] if output_hidden_states else None
        mode = self.config.checkpointing if self.training and torch.is_grad_enabled() else False
        host = HostCheckpoints(hidden.device) if mode == "offload" else None
        for index, layer in enumerate(self.layers):
            if host is not None:
                hidden = offloaded_block(layer, host, index, hidden)
            elif mode:
                hidden = checkpoint(layer, hidden, use_reentrant=False)
            else:
                hidden = layer(hidden)
            if output_hidden_states:
                states.append(hidden)
        hidden = self.norm_f(hidden)
        if output_hidden_states:
            states[-1] = hidden
        return hidden, states

    def forward(self, input_ids, output_hidden_states: bool = False):
        """input_ids (B, L) -> logits (B, L, vocab); with ``output_hidden_states`` also a list of
        n_layer + 1 tensors (B, L, d_model): embeddings, then each block (last after norm_f)."""
        ids = input_ids.long()
        if not self.config.rc_equivariant:
            hidden, states = self._trunk(ids, output_hidden_states)
            logits = hidden @ self.embedding.weight.t()
            return (logits, states) if output_hidden_states else logits
        batch = ids.shape[0]
        rc_ids = self.complement[ids].flip(1)
        hidden, states = self._trunk(torch.cat([ids, rc_ids]), output_hidden_states)
        h_fwd, h_rc = hidden[:batch], hidden[batch:].flip(1)
        emb = self.embedding.weight
        logits = h_fwd @ emb.t() + h_rc @ emb[self.complement].t()
        if not output_hidden_states:
            return logits
        return logits, [torch.cat([s[:batch], s[batch:].flip(1)], dim=-1) for s in states]

    def compile_blocks(self, **options) -> "GenoSSM":
        """``torch.compile`` each block in place: Inductor fuses the norm, convs, gating and casts
        around the scan (which stays one custom op). The first call per input shape compiles."""
        for layer in self.layers:
            layer.compile(**options)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory):
        """Write ``config.json`` and ``model.safetensors`` (no pickles) into ``directory``."""
        from safetensors.torch import save_file

        from genossm.utils.atomic import atomic_output

        with atomic_output(directory, directory=True) as tmp:
            (tmp / "config.json").write_text(self.config.to_json())
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, path, map_location="cpu") -> "GenoSSM":
        """Load a save_pretrained directory, or a Lightning ``.ckpt`` (weights_only=True: no
        arbitrary unpickling). Returns the model in eval mode."""
        from genossm.errors import GenossmError

        path = Path(path)
        if path.is_dir():
            from safetensors.torch import load_file

            cfg_file, weights = path / "config.json", path / "model.safetensors"
            if not cfg_file.is_file() or not weights.is_file():
                raise GenossmError("not a genossm model directory (needs config.json and "
                                   "model.safetensors)", path=path)
            try:
                config = GenoSSMConfig.from_dict(json.loads(cfg_file.read_text()))
                state = load_file(str(weights), device=str(map_location))
            except Exception as err:  # bad JSON, unknown config keys, a damaged safetensors file
                raise GenossmError(f"unreadable model directory ({_one_line(err)})", path=path) from None
        elif path.is_file():
            try:
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
            except Exception as err:  # not a zip/pickle at all, or pickled objects beyond tensors
                raise GenossmError("not a genossm model: a save_pretrained directory or a Lightning .ckpt "
                                   f"was expected ({_one_line(err)})", path=path) from None
            try:
                config = GenoSSMConfig.from_dict(dict(ckpt["hyper_parameters"]["model"]))
            except (KeyError, TypeError) as err:
                raise GenossmError(f"checkpoint has no model config ({err})", path=path) from None
            state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()
                     if k.startswith("model.")}
        else:
            raise GenossmError("no such model file or directory", path=path)
        model = cls(config)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise GenossmError(f"weights do not fit the model config ({_one_line(err)})", path=path) from None
        return model.eval()


def _one_line(err: Exception) -> str:
    """An exception as one line: its type and the first line of its message."""
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
