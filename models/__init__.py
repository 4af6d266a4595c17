"""Networks: loading a target, the seeded random network, per-weight problems, the pruned ticket.

From Python, the whole job is two calls (:mod:`models.api`)::

    ticket = models.build_ticket(net, input_shape=(1, 28, 28), domain=(0.0, 1.0), n=21, eps=0.01)
    ticket.save("runs/net"); again = models.load_ticket("runs/net", trust_pickle=True)

The results are typed: ``ticket.network`` is a :class:`PrunedNetwork` (a construction and a rebuilt
ticket alike), ``ticket.check`` a :class:`Verification` with its :class:`CertifiedBound`, and the
inputs covered an :class:`InputDomain`.
"""

from .api import Ticket, build_ticket, load_ticket
from .bounds import CertifiedBound
from .domain import InputDomain
from .network import PrunedNetwork
from .verify import Verification

__all__ = ["CertifiedBound", "InputDomain", "PrunedNetwork", "Ticket", "Verification", "build_ticket", "load_ticket"]
