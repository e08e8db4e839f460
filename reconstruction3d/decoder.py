"""Spiral-convolution mesh decoder and the image-to-mesh network (paper §5.5, App. A.2).

SpiralNet++ (Gong et al., ICCVW 2019, https://arxiv.org/abs/1911.05856): a spiral convolution is a
gather of each vertex's spiral followed by one linear layer (shared/research/anchors_landmarks_3d.md
§5.2; Xavier-uniform weights, zero bias). The decoder follows the image-to-mesh shape of §5.4
(HandMesh): the backbone's pooled feature -> linear -> features on the coarsest mesh, then per level
an up-sampling (sparse matmul with the COMA matrix U) and a spiral convolution + ELU, then a final
spiral convolution to x, y, z. The output is added to a fixed mean shape (a buffer set from the
training targets), so the network regresses the deviation from it; the output layer starts at
zero, so training starts from the mean-shape baseline.
"""
import numpy as np
import torch
from torch import nn


class SpiralConv(nn.Module):
    """x (N, B, C_in) -> (N, B, C_out): gather each vertex's spiral, one linear layer.

    The decoder keeps features vertex-major (N, B, C) so that gathers and the sparse
    up-sampling act on contiguous rows.
    """

    def __init__(self, in_channels, out_channels, spirals):
        super().__init__()
        self.spirals = torch.as_tensor(spirals, dtype=torch.long).contiguous()  # N x L, moved by _apply
        self.linear = nn.Linear(in_channels * self.spirals.shape[1], out_channels)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def _apply(self, fn, recurse=True):
        # Topology tensors are plain attributes, not buffers: they stay out of the state dict
        # and out of DDP's per-step buffer broadcast, and are rebuilt from the mesh cache.
        super()._apply(fn, recurse)
        self.spirals = fn(self.spirals)
        return self

    def forward(self, x):
        n, b, c = x.shape
        # sum over spiral positions l of x[spiral[:, l]] @ W_l^T: the same linear map as gathering the
        # whole (N, L*C) spiral first, without materialising it (2x faster on CPU, L x less memory)
        w = self.linear.weight.view(self.linear.out_features, -1, c)    # C_out x L x C
        out = torch.addmm(self.linear.bias, x.index_select(0, self.spirals[:, 0]).reshape(n * b, c), w[:, 0].t())
        for pos in range(1, w.shape[1]):
            out = out.addmm(x.index_select(0, self.spirals[:, pos]).reshape(n * b, c), w[:, pos].t())
        return out.view(n, b, -1)                                       # N x B x C_out


def sparse_pool(x, matrix):
    """x (N_in, B, C) -> (N_out, B, C) with a sparse (N_out, N_in) matrix, in float32."""
    n, b, c = x.shape
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = torch.sparse.mm(matrix.float(), x.float().reshape(n, b * c))  # N_out x (B*C)
    return out.reshape(-1, b, c)


def to_torch_sparse(matrix):
    """A scipy sparse matrix as a coalesced float32 torch COO tensor."""
    coo = matrix.tocoo()
    indices = torch.as_tensor(np.stack([coo.row, coo.col]), dtype=torch.long)
    return torch.sparse_coo_tensor(indices, torch.as_tensor(coo.data, dtype=torch.float32),
                                   coo.shape, check_invariants=True).coalesce()


class SpiralDecoder(nn.Module):
    """Feature (B, F) -> vertices (B, V, 3) on the finest level of a mesh hierarchy.

    spirals: per level 0 (finest) .. K, (n_i, L_i) index arrays; up: K scipy matrices (n_i, n_{i+1});
    channels: K widths, from the coarsest block to the finest (e.g. 256, 128, 64, 32).
    """

    def __init__(self, in_features, spirals, up, channels):
        super().__init__()
        levels = len(up)
        if len(spirals) != levels + 1 or len(channels) != levels:
            raise ValueError(f"{levels} up-sampling matrices need {levels + 1} spiral sets and "
                             f"{levels} channel widths; got {len(spirals)} and {len(channels)}")
        self.n_coarse, self.width = len(spirals[-1]), channels[0]
        self.fc = nn.Linear(in_features, self.n_coarse * channels[0])
        self.up = [to_torch_sparse(u) for u in up]                      # moved by _apply
        widths = [channels[0], *channels]
        # block j up-samples level K-j to level K-j-1, then convolves there
        self.blocks = nn.ModuleList(SpiralConv(widths[j], widths[j + 1], spirals[levels - j - 1])
                                    for j in range(levels))
        self.head = SpiralConv(channels[-1], 3, spirals[0])
        nn.init.zeros_(self.head.linear.weight)                         # start exactly at the mean shape
        self.act = nn.ELU()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.up = [fn(u) for u in self.up]
        return self

    def forward(self, feature):
        x = self.fc(feature).reshape(-1, self.n_coarse, self.width).transpose(0, 1)  # n_K x B x C_0
        for j, block in enumerate(self.blocks):
            x = sparse_pool(x, self.up[len(self.up) - 1 - j])           # n_{K-j-1} x B x C
            x = self.act(block(x))
        return self.head(x).transpose(0, 1)                             # B x n_0 x 3


class MeshRegressor(nn.Module):
    """Backbone -> pooled feature -> spiral decoder -> ``mean_shape`` + offsets (B, V, 3)."""

    def __init__(self, backbone, decoder, n_vertices):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.register_buffer("mean_shape", torch.zeros(n_vertices, 3))

    def forward(self, images):
        return self.mean_shape + self.decoder(self.backbone(images))
