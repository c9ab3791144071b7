# -*- test-case-name: tests.test_client_tls -*-
"""
Checking a TLS server's identity before the client talks SIP to it.

The transport layer opens TLS connections with the connection creator the
client gives it (L{sipdist.sip.tls.clientContextFactory}: the CA configured,
service-identity checking the name), but a failed handshake there only
shows as a connection that goes away, and the REGISTER written into it as a
transaction that times out much later.  So, before it uses a TLS server for
the first time, the client makes one handshake of its own with the same
options (L{checkTLS}) and turns a failure into one clear line
(L{TLSFailure}): the certificate does not name the server, is not issued by
the configured CA, or the server does not speak TLS.  The check costs one
extra handshake per server and login.
"""

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, endpoints
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

CHECK_TIMEOUT = 10.0


class TLSFailure(Exception):
    """
    A TLS server could not be verified; C{str()} is one line.
    """


@implementer(IHandshakeListener)
class _Probe(Protocol):
    def __init__(self, done):
        self.done = done

    handshook = False

    def handshakeCompleted(self):
        # The verdict waits for the connection to close: Twisted before
        # 26.4 reports the handshake complete before it checks the
        # certificate's name, and then closes the connection with
        # VerificationError.
        self.handshook = True
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self.done.called:
            return
        if self.handshook and reason.check(ConnectionDone):
            self.done.callback(None)
        else:
            self.done.errback(reason)


def describeTLSFailure(failure, hostname, where):
    """
    One line for a failed TLS handshake with C{where}, which had to prove
    it is C{hostname}.
    """
    if failure.check(VerificationError):
        return (f"TLS: the certificate of {where} does not name "
                f"{hostname!r} (service identity check failed)")
    if failure.check(SSL.Error):
        detail = str(failure.value)
        if "certificate verify failed" in detail:
            return (f"TLS: the certificate of {where} is not issued by a "
                    f"trusted CA (check --ca)")
        return f"TLS handshake with {where} failed: {detail}"
    if failure.check(ConnectError):
        return f"cannot connect to {where}: {failure.getErrorMessage()}"
    if failure.check(defer.CancelledError, defer.TimeoutError):
        return f"TLS handshake with {where} timed out"
    return (f"TLS handshake with {where} failed: "
            f"{failure.getErrorMessage() or failure.type.__name__}")


def checkTLS(reactor, host, port, hostname, creator, timeout=CHECK_TIMEOUT):
    """
    Make one TLS handshake with C{host:port} using C{creator} (which checks
    the certificate against C{hostname}), then close the connection.

    @return: L{Deferred} firing with C{None}, or failing with L{TLSFailure}.
    """
    done = defer.Deferred()
    where = f"{host}:{port}"
    endpoint = endpoints.wrapClientTLS(
        creator, endpoints.HostnameEndpoint(reactor, host, port,
                                            timeout=timeout))
    connecting = endpoint.connect(Factory.forProtocol(lambda: _Probe(done)))

    def cannotConnect(failure):
        if not done.called:
            done.errback(failure)

    connecting.addErrback(cannotConnect)

    def timedOut(result, timeout):
        connecting.cancel()
        return defer.fail(defer.TimeoutError(f"no handshake in {timeout} s"))

    done.addTimeout(timeout, reactor, onTimeoutCancel=timedOut)

    def failed(failure):
        raise TLSFailure(describeTLSFailure(failure, hostname, where))

    done.addErrback(failed)
    return done
