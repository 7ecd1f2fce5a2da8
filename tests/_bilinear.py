"""A degree-2 homogeneous encoder shared by the custom-encoder tests."""

from torch import nn


class Bilinear(nn.Module):
    """Degree-2 homogeneous: y = W_p((W_l z) * (W_r z))."""

    def __init__(self, n_in: int, width: int = 16) -> None:
        super().__init__()
        self.left = nn.Linear(n_in, width, bias=False)
        self.right = nn.Linear(n_in, width, bias=False)
        self.proj = nn.Linear(width, 2, bias=False)

    def forward(self, z):
        return self.proj(self.left(z) * self.right(z))
