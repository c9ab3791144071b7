# -*- test-case-name: tests -*-
"""
The interfaces of sipdist.  Implementations live in their own modules, each
declared with C{@implementer} and checked with C{verifyObject} in the tests.
"""

from zope.interface import Attribute, Interface


# --- Assignment store ---------------------------------------------------


class IAssignmentStore(Interface):
    """
    The central assignment database: user address-of-record to the id of its
    home server, and server id to a server record.

    Every AOR argument is compared in normalised form (see
    L{sipdist.store.aorKey}): C{sip:} scheme, user part unescaped, host
    lower-cased, no port or parameters.  Every method but L{watch} returns a
    L{Deferred}; on the memory and file stores, and on the LDAP store when
    the answer is cached, L{lookupUser} and L{getServer} return one that
    has already fired.

    Errors are the subclasses of L{sipdist.store.StoreError}.
    """

    def lookupUser(aor):
        """
        The id of the server a user is assigned to.

        @param aor: the user's address-of-record (C{sip:alice@example.com},
            C{<sips:alice@Example.COM;transport=tls>} or C{alice@example.com}).
        @return: L{Deferred} firing with the server id (L{str}) or L{None}
            if the user has no assignment.
        """

    def getServer(serverId):
        """
        @return: L{Deferred} firing with the L{sipdist.store.ServerRecord}
            of C{serverId} or L{None} if there is no such server.
        """

    def listServers():
        """
        @return: L{Deferred} firing with a L{list} of every
            L{sipdist.store.ServerRecord}, sorted by id.
        """

    def countUsers():
        """
        @return: L{Deferred} firing with a L{dict} mapping every server id to
            the number of users assigned to it (0 included).
        """

    def usersOf(serverId, limit=None):
        """
        @return: L{Deferred} firing with a L{list} of the normalised AORs
            assigned to C{serverId}, at most C{limit} of them.
        """

    def assignUser(aor, serverId):
        """
        Assign a user to a server, whether or not it had an assignment.

        @return: L{Deferred} firing with the previous server id or L{None};
            fails with L{sipdist.store.UnknownServer} if C{serverId} is not
            a server.
        """

    def moveUser(aor, serverId):
        """
        Move a user that has an assignment to another server.

        @return: L{Deferred} firing with the previous server id; fails with
            L{sipdist.store.UnknownUser} if the user has no assignment.
        """

    def removeUser(aor):
        """
        Remove a user's assignment.

        @return: L{Deferred} firing with the previous server id; fails with
            L{sipdist.store.UnknownUser} if the user had none.
        """

    def assignUsers(pairs):
        """
        Assign (or move) many users at once: one write for the file store.
        Every server id is checked before anything is changed.

        @param pairs: iterable of C{(aor, serverId)}.
        @return: L{Deferred} firing with the number of users assigned.
        """

    def removeUsers(aors):
        """
        Remove many assignments at once; AORs without one are ignored.

        @return: L{Deferred} firing with the number of assignments removed.
        """

    def addServer(record):
        """
        Add a server.

        @type record: L{sipdist.store.ServerRecord}
        @return: L{Deferred} firing with C{record}; fails with
            L{sipdist.store.ServerExists} if the id is taken.
        """

    def updateServer(serverId, uri=None, weight=None, state=None,
                     tcpUri=None, tlsUri=None):
        """
        Change some fields of a server; L{None} leaves a field as it is, and
        C{""} removes C{tcpUri} or C{tlsUri} (see
        L{sipdist.store.ServerRecord}).

        @return: L{Deferred} firing with the new record; fails with
            L{sipdist.store.UnknownServer}.
        """

    def removeServer(serverId):
        """
        Remove a server that has no users assigned.

        @return: L{Deferred} firing with the removed record; fails with
            L{sipdist.store.UnknownServer} or L{sipdist.store.ServerInUse}.
        """

    def watch(callback):
        """
        Learn about changes, whether made through this object or by another
        writer (another process editing the file, the directory changed).

        @param callback: called with a L{sipdist.store.UserChanged} or
            L{sipdist.store.ServerChanged} for every change; its exceptions
            are logged and otherwise ignored.
        @return: a callable taking no argument that stops the watching.
        """

    def close():
        """
        Stop timers and connections.

        @return: L{Deferred} firing when done.
        """


class IAssignmentStoreParser(Interface):
    """
    A plugin building an L{IAssignmentStore} from a store string such as
    C{file:/etc/sipdist/assignments.conf}, chosen by the text before the
    first colon, the way L{twisted.internet.interfaces.IStreamServerEndpointStringParser}
    plugins are.  Plugin modules go in a C{twisted/plugins} directory and
    must import nothing heavy: import the provider inside L{parseStore}.
    """

    prefix = Attribute("The store string prefix, without the colon: C{file}.")

    description = Attribute("One line for C{--help}: what the store is.")

    def parseStore(reactor, description):
        """
        @param reactor: the reactor the store uses for time and network.
        @param description: the whole store string, prefix included.
        @return: an L{IAssignmentStore}.
        @raise sipdist.store.StoreConfigError: if the string is not valid.
        """


# --- Transactions (sipdist.sip.transaction) -------------------------------------


class ITransactionUser(Interface):
    """
    The layer above L{sipdist.sip.transaction.TransactionLayer}: a UAS/UAC core or
    a proxy core (RFC 3261 section 17).  Every server role is one.

    The transaction layer absorbs retransmissions, so each method is called
    once per new request or unmatched message.  Methods return nothing; an
    exception raised by one is logged and, for a request, answered with
    C{500}.
    """

    def requestReceived(request, transaction):
        """
        A new request (not ACK, not CANCEL, not a retransmission) arrived.

        @param request: the L{sipdist.sip.message.Request}.
        @param transaction: its L{sipdist.sip.transaction.ServerTransaction}; the
            user must eventually call C{transaction.respond(response)} with a
            final response (an unanswered transaction is ended after a
            bounded time and reported through L{transactionFailed}).
        """

    def cancelReceived(request, transaction, cancelled):
        """
        A new CANCEL arrived (RFC 3261 section 9.2, 16.10).

        @param transaction: the CANCEL's own non-INVITE server transaction;
            answer it (C{200} if C{cancelled} is not None, else C{481} for a
            UAS; a proxy forwards an unmatched CANCEL statelessly and answers
            nothing).
        @param cancelled: the INVITE L{sipdist.sip.transaction.ServerTransaction}
            the CANCEL matches, or None.
        """

    def ackReceived(request, flow):
        """
        An ACK that belongs to no server transaction (an ACK for a 2xx, which
        is its own transaction and end to end), or an ACK for a 2xx matching
        an INVITE server transaction in the RFC 6026 Accepted state.

        @param flow: where it came from (the transport's flow object).
        """

    def responseReceived(response, flow):
        """
        A response that matches no client transaction (branch, CSeq method
        and sent-by; a proxy drops it, RFC 6026), or an additional 2xx
        (retransmitted or forked) for an INVITE client transaction in the
        RFC 6026 Accepted state that has no C{onFurther2xx} hook.
        """

    def transactionFailed(transaction, reason):
        """
        A server transaction ended abnormally: its response could not be sent
        (C{TransportError}, section 17.2.4), no ACK came for a non-2xx final
        response to an INVITE (timer H, C{TransactionTimeout}), or the user
        never answered (C{TransactionTimeout}).
        """
