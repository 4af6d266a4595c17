"""Networks: loading a target, the seeded random network, per-weight problems, the pruned ticket.

From Python, the whole job is two calls (:mod:`models.api`)::

    ticket = models.build_ticket(net, input_shape=(1, 28, 28), domain=(0.0, 1.0), n=21, eps=0.01)
    ticket.save("runs/net"); again = models.load_ticket("runs/net", trust_pickle=True)
"""

from .api import Ticket, build_ticket, load_ticket

__all__ = ["Ticket", "build_ticket", "load_ticket"]
