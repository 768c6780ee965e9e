"""A user's own member, registered from the user's own module (`--import user_models`)."""

from torch import nn

from iwu.models import register_model


class TinyNet(nn.Module):
    """No backbone: it trains as one group at its member's rate."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, num_classes, 1))

    def forward(self, x):
        return self.body(x)


@register_model("tiny_user_net")
def tiny_user_net(num_classes, *, pretrained=False, width=8):
    return TinyNet(num_classes, width)
