"""One association a peer opened with the storage SCP: negotiated, then its messages until it ends.

The receive path every image takes is short on purpose: a PDU is read whole into one buffer, its
fragments are joined once, the command set is a mapping of a few elements, and the response
leaves in one write. Anything off the protocol aborts the association; nothing a peer sends is
held beyond the limits set here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from app.net import commands, pdu
from app.net.commands import Command
from app.net.pdu import Accepted, AssociateRequest, Channel, ProtocolError

MAX_PDU = 1 << 20  # what we take in one P-DATA-TF: large PDUs cost less per image; bounded memory
IDLE_WAIT = 60.0  # seconds an established association may stay silent (or take over one PDU)
UNRECOGNISED = 0x0211  # status: an operation this SCP does not perform


@dataclass(frozen=True)
class Message:
    """A request with its data set (None: it had none, or it was larger than the SCP takes)."""

    command: Command
    context: tuple[str, str]  # (abstract syntax, transfer syntax) it came on
    data: bytes | None


Handler = Callable[[Message], int]  # the status to answer with


def negotiate(request: AssociateRequest, supported: Mapping[str, Sequence[str]],
              both_roles: frozenset[str]) -> tuple[list[Accepted], dict[str, tuple[bool, bool]]]:
    """Each proposed context's outcome: accepted in the first of our transfer syntaxes (in our order)
    the requestor offers. SCP/SCU role selection is answered for ``both_roles`` classes only (we may
    be either): a storage commitment report comes on an association the PACS opens as its SCP."""
    outcomes, roles = [], {}
    for proposed in request.contexts:
        ours = supported.get(proposed.abstract_syntax)
        chosen = next((ts for ts in ours or () if ts in proposed.transfer_syntaxes), None)
        if ours is None or chosen is None:
            refused = pdu.ABSTRACT_SYNTAX_REFUSED if ours is None else pdu.TRANSFER_SYNTAX_REFUSED
            outcomes.append(Accepted(proposed.context_id, refused, (*proposed.transfer_syntaxes, "")[0]))
            continue
        outcomes.append(Accepted(proposed.context_id, pdu.ACCEPTED, chosen))
        if proposed.abstract_syntax in both_roles and proposed.abstract_syntax in request.roles:
            roles[proposed.abstract_syntax] = request.roles[proposed.abstract_syntax]
    return outcomes, roles


class Aborted(ConnectionError):
    """The peer aborted the association (A-ABORT)."""


class Messages:
    """The complete DIMSE messages of one established association, as its P-DATA-TF PDUs bring them
    (a release ends them; an abort is :class:`Aborted`). A data set larger than ``max_data`` is read
    and dropped: its message comes with none."""

    def __init__(self, channel: Channel, contexts: dict[int, tuple[str, str]], *, max_data: int,
                 max_send: int, releasing: Callable[[], None] = lambda: None) -> None:
        """``max_send``: the most the peer takes in one PDU (0: no limit), as it negotiated;
        ``releasing``: what must be done before the peer's release is answered."""
        self.channel = channel
        self._releasing = releasing
        self.contexts = contexts
        self._max_data = max_data
        self._max_send = max_send

    def __iter__(self) -> Iterator[tuple[Message, int]]:
        """Each message with the context ID it came on."""
        command = bytearray()
        pending: tuple[Command, int] | None = None  # a command awaiting its data set, on its context
        data, dropped = bytearray(), False
        while True:
            kind, body = self.channel.read(MAX_PDU, IDLE_WAIT)
            if kind == pdu.RELEASE_RQ:
                self._releasing()
                self.channel.send(pdu.RELEASE_REPLY)
                return
            if kind == pdu.RELEASE_RP:
                return
            if kind == pdu.ABORT:
                raise Aborted("the peer aborted the association")
            if kind != pdu.P_DATA:
                raise ProtocolError("an unexpected PDU on an established association")
            for context, control, fragment in pdu.pdvs(body):
                if context not in self.contexts:
                    raise ProtocolError("a message on a presentation context never accepted")
                if control & 0x01:  # a command fragment
                    if pending is not None or len(command) + len(fragment) > commands.MAX_COMMAND:
                        raise ProtocolError("a command set interrupting a data set, or far too long")
                    command += fragment
                    if control & 0x02:
                        request, command = commands.read(command), bytearray()
                        if request.has_data:
                            pending = (request, context)
                        else:
                            yield Message(request, self.contexts[context], None), context
                    continue
                if pending is None or pending[1] != context:
                    raise ProtocolError("a data set with no command before it")
                if dropped or len(data) + len(fragment) > self._max_data:
                    data, dropped = bytearray(), True  # over the limit: the rest is read and dropped
                else:
                    data += fragment
                if control & 0x02:
                    complete = None if dropped else bytes(data)
                    yield Message(pending[0], self.contexts[context], complete), context
                    pending, data, dropped = None, bytearray(), False

    def answer(self, request: Command, context: int, status: int) -> None:
        """Send the response to ``request`` (received on ``context``) with ``status``."""
        answer = commands.response(request, request.field | commands.RESPONSE, status)
        self.send(context, answer, command=True)

    def send(self, context: int, message: bytes, *, command: bool) -> None:
        self.channel.send(*pdu.p_data(context, message, command=command, max_length=self._max_send))


def serve(messages: Messages, handle: Handler) -> None:
    """Answer each request of an association with ``handle``'s status until the peer releases it."""
    for message, context in messages:
        if not message.command.field & commands.RESPONSE:  # (a response we never asked for: ignored)
            messages.answer(message.command, context, handle(message))
