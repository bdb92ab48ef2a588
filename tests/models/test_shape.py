import torch

from medsynth.models.registry import ModelSpec, build_generator
from medsynth.models.shape import mask_loss, soft_body_mask
from medsynth.train.data import one_hot


def disc(size: int, radius: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < radius**2).float()[None, None]


def test_soft_mask_follows_intensity_and_loss_orders_outlines():
    body = disc(32, 10)
    image = body * 1.0 + (1 - body) * -1.0
    soft = soft_body_mask(image)
    assert soft[body > 0].mean() > 0.99 and soft[body == 0].mean() < 0.1
    matching = mask_loss(image, body)
    shrunk = mask_loss(disc(32, 6) * 2 - 1, body)
    assert matching < 0.05 < shrunk


def test_mask_loss_alone_trains_the_generator_toward_the_label_outline():
    torch.manual_seed(0)
    spec = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)
    G = build_generator(spec, 2)
    body = disc(16, 5).repeat(2, 1, 1, 1)
    onehot = one_hot(body[:, 0].long(), 2)
    z = G.noise(2, 16, 16)

    loss = mask_loss(G(onehot, z), body)
    loss.backward()
    grads = [p.grad.abs().sum() for p in G.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0  # the loss passes a gradient (the original code's did not)

    def outline_dice() -> float:
        with torch.no_grad():
            hard = (G(onehot, z) > -0.95).float()
        return float(2 * (hard * body).sum() / (hard.sum() + body.sum()))

    start = float(loss.detach())

    before = outline_dice()
    opt = torch.optim.Adam(G.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        loss = mask_loss(G(onehot, z), body)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < start
    assert outline_dice() > max(before, 0.9)
