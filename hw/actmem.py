"""Where activation maps live: the regions of the activation memory.

Layer ``i`` (not the last) writes its output into a region that holds no map still to be read:
the lowest free one. A sequential network alternates two regions (ping-pong); a residual
block's input stays for its shortcut, so a ResNet takes three. Both the generator and the
controller's tag layout (the width of a shortcut address) read this plan.
"""

from __future__ import annotations

__all__ = ["act_regions", "write_bases", "layer_bases"]


def last_use(ex) -> list:
    """Per layer ``k``: the last layer that reads ``k``'s output (the next layer, or a residual
    layer whose shortcut is that output: the input of the layer it names)."""
    n = len(ex.layers)
    last = [k + 1 for k in range(n)]
    for i, l in enumerate(ex.layers):
        if l.spec.residual is not None:
            k = l.spec.residual - 1
            if 0 <= k < n:
                last[k] = max(last[k], i)
    return last


def slots(ex) -> list:
    """Per hidden layer, the region of the activation memory it writes: the lowest region not
    holding a map still to be read. A sequential network alternates two (ping-pong); a residual
    block keeps its input for the shortcut, so ResNet takes three."""
    last = last_use(ex)
    slots = []
    for i in range(len(ex.layers) - 1):
        busy = {slots[k] for k in range(i) if last[k] >= i}
        slots.append(min(set(range(i + 1)) - busy))
    return slots


def act_regions(ex) -> dict:
    """Words of the activation memory's regions: layer ``i`` writes region ``slots[i]``
    (:func:`slots`), each region as large as the largest output written there."""
    G = ex.geometry.G
    words = [-(-l.spec.out_h * l.spec.out_w * l.spec.cout // G) for l in ex.layers[:-1]]
    where = slots(ex)
    n = max(where, default=0) + 1
    buf = [max([1] + [w for w, s in zip(words, where) if s == b]) for b in range(n)]
    buf += [1] * (2 - len(buf))
    return {"buffers": buf, "depth": sum(buf), "slots": where}


def write_bases(ex) -> list:
    """Per hidden layer, the first word of its output in the activation memory."""
    reg = act_regions(ex)
    start = [sum(reg["buffers"][:b]) for b in range(len(reg["buffers"]))]
    return [start[s] for s in reg["slots"]]


def layer_bases(ex):
    """Per layer: (read base, write base); layer 0 reads the input buffer, the last writes none."""
    wb = write_bases(ex) + [0]
    return [(0 if i == 0 else wb[i - 1], wb[i]) for i in range(len(ex.layers))]
