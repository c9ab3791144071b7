"""
The conformance corpus: for each message of RFC 4475 and RFC 5118, a
message of our own that exercises what the RFC's section describes, and
what sipdist answers.

Each entry of L{CORPUS} is a L{Case}: the RFC and section, the short name
the RFC gives it, what it exercises, its bytes, and the expected outcome:
a status code (with the reason phrase, for our own 400s), C{ACCEPTED} (the
request passed parsing and validation and went on to the role: whatever the
role answers, it is not a 400-class syntax answer), or C{DROPPED} (no
answer: a response, or a request no answer can be routed for).
"""

from dataclasses import dataclass

ACCEPTED = "accepted"
DROPPED = "dropped"


@dataclass(frozen=True)
class Case:
    rfc: str
    section: str
    name: str
    exercises: str
    data: bytes
    code: object
    phrase: str = None


def message(startLine, headers, body=b"", contentLength=None):
    """
    The bytes of a message: C{headers} are lines written as they go on the
    wire (folding included), Content-Length added unless a header line
    gives one.
    """
    lines = [startLine] + list(headers)
    if not any(h.lower().startswith(("content-length", "l:", "l "))
               for h in headers):
        lines.append(f"Content-Length: "
                     f"{len(body) if contentLength is None else contentLength}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def common(method, cseq=1, via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKct1",
           to="<sip:bob@example.com>", callID="conf-1@192.0.2.7"):
    return [f"Via: {via}", "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=c0nf",
            f"To: {to}", f"Call-ID: {callID}", f"CSeq: {cseq} {method}",
            "Contact: <sip:alice@192.0.2.7:5060>"]


SDP = (b"v=0\r\no=alice 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\n"
       b"t=0 0\r\nm=audio 49170 RTP/AVP 0\r\n")
SDP6 = (b"v=0\r\no=alice 1 1 IN IP6 2001:db8::7\r\ns=-\r\n"
        b"c=IN IP6 2001:db8::7\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n")

C = []

# RFC 4475 section 3.1.1: valid messages that are hard to parse.
C.append(Case(
    "4475", "3.1.1.1", "wsinv",
    "header names in odd case, LWS around ':' ';' '=' and '/', folded "
    "values (Via sent-protocol split over lines), leading zeros in "
    "Max-Forwards and CSeq, compact and long forms mixed, an empty Subject, "
    "an unknown header with a value of separators, several Via values on "
    "one line",
    message("INVITE sip:bob@example.com;unknownparam SIP/2.0", [
        "tO  :",
        " <sip:bob@example.com> ;   tag    = 8321234356",
        'frOM   : "Alice \\"the tester\\""   <sip:alice@example.com>',
        "   ;",
        "  tag = 2bf1a",
        "MAX-forwards: 0068",
        "i: torture-wsinv@192.0.2.7",
        "cSeQ: 0009",
        "  INVITE",
        "Via  : SIP  /   2.0",
        " /UDP",
        "    192.0.2.7;branch=z9hG4bKws1",
        "s :",
        "NewFangledHeader:   newfangled value",
        " continued newfangled value",
        "UnknownHeaderWithUnusualValue: ;;,,;;,;",
        "c: application/sdp",
        "v:  SIP  / 2.0  / TCP     relay.example.net   ;",
        "  branch  =   z9hG4bKrelay1  ,",
        " SIP  /    2.0   / UDP  192.0.2.99   ; branch=",
        " z9hG4bKlast",
        'm:"Quoted \\"name\\"" <sip:alice@192.0.2.7> ; newparam =',
        "      newvalue ;",
        "  secondparam ; q = 0.33",
    ], SDP), ACCEPTED))
C.append(Case(
    "4475", "3.1.1.2", "intmeth",
    "an extension method made of every token character, a Request-URI "
    "whose user part holds '?', ';', ',', '/', '&', '=', '$', a header "
    "name made of token characters",
    message("!Strange-Method_0*+`.%now'~ "
            "sip:1_odd.URI~(ok!)&it's+fine$/odd?,/;;*:&p=1,q!*pass$w~d_.(x)"
            "@example.com SIP/2.0", [
                "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKim1",
                "Max-Forwards: 70",
                "From: <sip:alice@example.com>;tag=im1",
                "To: <sip:bob@example.com>",
                "Call-ID: intmeth@192.0.2.7",
                "CSeq: 139122385 !Strange-Method_0*+`.%now'~",
                "extensionHeader-!.%*+_`'~: \U0001F600 odd value",
            ]), 501))
C.append(Case(
    "4475", "3.1.1.3", "esc01",
    "%-escapes in the Request-URI user part, in To, From and Contact URIs "
    "and in Contact URI parameter names and values",
    message("INVITE sip:sips%3Abob%40example.net@example.com SIP/2.0",
            common("INVITE", to="<sip:%62ob@example.com>")[:-1] + [
                "Contact: <sip:%61lice@192.0.2.7;%6C%72;n%61me=v%61lue%25%34%31>",
                "Content-Type: application/sdp"], SDP), ACCEPTED))
C.append(Case(
    "4475", "3.1.1.4", "escnull",
    "escaped NUL octets (%00) in user parts",
    message("REGISTER sip:example.com SIP/2.0",
            common("REGISTER", to="<sip:null-%00-null@example.com>")[:-1] + [
                "Contact: <sip:%00@192.0.2.7>",
                "Contact: <sip:%00%00@192.0.2.7>"]), ACCEPTED))
C.append(Case(
    "4475", "3.1.1.5", "esc02",
    "a '%' that is no escape: in a method name (an unknown method), in a "
    "display name, in the CSeq method",
    message("RE%47IST%45R sip:example.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKe2",
        "Max-Forwards: 70",
        'From: "%Z%45" <sip:alice@example.com>;tag=e2',
        "To: <sip:alice@example.com>",
        "Call-ID: esc02@192.0.2.7",
        "CSeq: 29 RE%47IST%45R"]), 501))
C.append(Case(
    "4475", "3.1.1.6", "lwsdisp",
    "no LWS between a display name and '<'",
    message("OPTIONS sip:example.com SIP/2.0",
            ["Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKlw",
             "Max-Forwards: 70", "From: alice<sip:alice@example.com>;tag=lw",
             "To: bob<sip:bob@example.com>", "Call-ID: lwsdisp@192.0.2.7",
             "CSeq: 1 OPTIONS"]), 200))
C.append(Case(
    "4475", "3.1.1.7", "longreq",
    "long values: a long To tag, a long header value, a long Call-ID, "
    "many Via values and many Contact values",
    message("INVITE sip:bob@example.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKlong",
        *[f"Via: SIP/2.0/TCP relay{i}.example.net;branch=z9hG4bKr{i}"
          for i in range(30)],
        "Max-Forwards: 70",
        "From: <sip:" + "a" * 300 + "@example.com>;tag=" + "1" * 400,
        "To: <sip:bob@example.com>",
        "Call-ID: " + "longreq" * 60 + "@192.0.2.7",
        "CSeq: 1 INVITE",
        "X-Long: " + "long value " * 300,
        *[f"Contact: <sip:alice@192.0.2.{i}>" for i in range(1, 40)],
        "Content-Type: application/sdp"], SDP), ACCEPTED))
C.append(Case(
    "4475", "3.1.1.8", "dblreq",
    "a UDP datagram holding a second message past Content-Length: the "
    "extra octets are discarded",
    message("REGISTER sip:example.com SIP/2.0", common("REGISTER"))
    + message("INVITE sip:bob@example.com SIP/2.0", common("INVITE")),
    ACCEPTED))
C.append(Case(
    "4475", "3.1.1.9", "semiuri",
    "a user part holding ';' and an escaped '@'",
    message("OPTIONS sip:bob;par=u%40example.net@example.com SIP/2.0",
            common("OPTIONS", to="<sip:bob;par=u%40example.net@example.com>")),
    ACCEPTED))
C.append(Case(
    "4475", "3.1.1.10", "transports",
    "Via values naming SCTP, TLS-SCTP and unknown transports under ours",
    message("OPTIONS sip:bob@example.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKtr",
        "Via: SIP/2.0/SCTP t2.example.net;branch=z9hG4bKt2",
        "Via: SIP/2.0/TLS-SCTP t3.example.net;branch=z9hG4bKt3",
        "Via: SIP/2.0/UNKNOWN t4.example.net;branch=z9hG4bKt4",
        "Via: SIP/2.0/UDP t5.example.net;branch=z9hG4bKt5",
    ] + common("OPTIONS")[1:]), ACCEPTED))
C.append(Case(
    "4475", "3.1.1.11", "mpart01",
    "a multipart/mixed body whose parts carry their own headers",
    message("MESSAGE sip:bob@example.com SIP/2.0", common("MESSAGE") + [
        'Content-Type: multipart/mixed;boundary=7a9cbec02ceef655'],
        b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--7a9cbec02ceef655\r\nContent-Type: text/html\r\n\r\n"
        b"<p>hello</p>\r\n--7a9cbec02ceef655--\r\n"), ACCEPTED))
C.append(Case(
    "4475", "3.1.1.12", "unreason",
    "a response whose reason phrase holds escapes, quotes and UTF-8: a "
    "response matching no transaction is dropped, never answered",
    message("SIP/2.0 200 = 2**3 * 5**2 \u0441\u0442\u043e \"quoted\" %41",
            common("INVITE")), DROPPED))
C.append(Case(
    "4475", "3.1.1.13", "noreason",
    "a response with an empty reason phrase (the status code followed by "
    "SP)", message("SIP/2.0 100 ", common("INVITE")), DROPPED))

# RFC 4475 section 3.1.2: invalid messages.
C.append(Case(
    "4475", "3.1.2.1", "badinv01",
    "extra separators in the Via and Contact parameters (empty parameters)",
    message("INVITE sip:bob@example.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.7;;,;,,"] + common("INVITE")[1:-1] + [
        "Contact: <sip:alice@192.0.2.7>;;;;,;;;;;"]), 400,
    "Empty Parameter In Via"))
C.append(Case(
    "4475", "3.1.2.2", "clerr",
    "a Content-Length larger than the body in a datagram",
    message("INVITE sip:bob@example.com SIP/2.0", common("INVITE"), SDP,
            contentLength=9999), 400, "Content-Length Mismatch"))
C.append(Case(
    "4475", "3.1.2.3", "ncl",
    "a negative Content-Length",
    message("INVITE sip:bob@example.com SIP/2.0", common("INVITE"), SDP,
            contentLength=-999), 400, "Bad Content-Length"))
C.append(Case(
    "4475", "3.1.2.4", "scalar02",
    "overlarge values: CSeq number past 2**31, Max-Forwards past 255, "
    "Expires and a Contact expires past 2**32",
    message("REGISTER sip:example.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKsc2",
        "Max-Forwards: 300",
        "From: <sip:alice@example.com>;tag=sc2",
        "To: <sip:alice@example.com>",
        "Call-ID: scalar02@192.0.2.7",
        "CSeq: 36893488147419103232 REGISTER",
        "Contact: <sip:alice@192.0.2.7>;expires=280297596632815",
        "Expires: 10000000000000"]), 400, "CSeq Number Too Large"))
C.append(Case(
    "4475", "3.1.2.5", "scalarlg",
    "a response with overlarge scalar fields: dropped",
    message("SIP/2.0 503 Service Unavailable", [
        "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKsl",
        "From: <sip:alice@example.com>;tag=sl", "To: <sip:bob@example.com>",
        "Call-ID: scalarlg@192.0.2.7", "CSeq: 1 INVITE",
        "Retry-After: 949302838503028349304023988",
        "Warning: 1812 overture \"In Progress\""]), DROPPED))
C.append(Case(
    "4475", "3.1.2.6", "quotbal",
    "an unterminated quoted string in a display name",
    message("INVITE sip:bob@example.com SIP/2.0",
            common("INVITE", to='"Mr. J. User <sip:bob@example.com>')),
    400, "Bad To Header"))
C.append(Case(
    "4475", "3.1.2.7", "ltgtruri",
    "the Request-URI in angle brackets",
    message("INVITE <sip:bob@example.com> SIP/2.0", common("INVITE")),
    400, "Bad Request-URI"))
C.append(Case(
    "4475", "3.1.2.8", "lwsruri",
    "LWS inside the Request-URI",
    message("INVITE sip:bob@example.com; lr SIP/2.0", common("INVITE")),
    400, "Space In Request-URI"))
C.append(Case(
    "4475", "3.1.2.9", "lwsstart",
    "several SP between the parts of the Request-Line",
    message("INVITE  sip:bob@example.com  SIP/2.0", common("INVITE")),
    400, "Extra Spaces In Request-Line"))
C.append(Case(
    "4475", "3.1.2.10", "trws",
    "SP after the SIP-Version at the end of the Request-Line",
    message("OPTIONS sip:bob@example.com SIP/2.0  ", common("OPTIONS")),
    400, "Trailing Space In Request-Line"))
C.append(Case(
    "4475", "3.1.2.11", "escruri",
    "escaped headers in the Request-URI: they must not be forwarded",
    message("INVITE sip:bob@example.com?Route=%3Csip:evil.example.net%3E "
            "SIP/2.0", common("INVITE")), 400,
    "Headers Not Allowed In Request-URI"))
C.append(Case(
    "4475", "3.1.2.12", "baddate",
    "a Date with a time zone other than GMT: a proxy does not read Date",
    message("INVITE sip:bob@example.com SIP/2.0", common("INVITE") + [
        "Date: Fri, 01 Jan 2010 16:00:00 EST"]), ACCEPTED))
C.append(Case(
    "4475", "3.1.2.13", "regbadct",
    "a Contact addr-spec holding '?' without angle brackets",
    message("REGISTER sip:example.com SIP/2.0", common("REGISTER")[:-1] + [
        "Contact: sip:alice@192.0.2.7?Route=%3Csip:sip.example.com%3E"]),
    400, "Contact URI Not In Angle Brackets"))
C.append(Case(
    "4475", "3.1.2.14", "badaspec",
    "LWS inside angle brackets around an addr-spec: read liberally",
    message("OPTIONS sip:bob@example.com SIP/2.0",
            common("OPTIONS", to='"Bob, Jr." < sip:bob@example.com >')),
    ACCEPTED))
C.append(Case(
    "4475", "3.1.2.15", "baddn",
    "a display name with non-token characters, unquoted",
    message("OPTIONS sip:bob@example.com SIP/2.0",
            common("OPTIONS", to="Bob, Jr. <sip:bob@example.com>")),
    400, "Bad To Header"))
C.append(Case(
    "4475", "3.1.2.16", "badvers",
    "an unknown protocol version", message(
        "OPTIONS sip:bob@example.com SIP/7.0", common("OPTIONS")),
    505, "SIP Version Not Supported"))
C.append(Case(
    "4475", "3.1.2.17", "mismatch01",
    "a method that differs from the CSeq method",
    message("OPTIONS sip:bob@example.com SIP/2.0", common("INVITE")),
    400, "CSeq Method Does Not Match"))
C.append(Case(
    "4475", "3.1.2.18", "mismatch02",
    "an unknown method with a CSeq method that differs",
    message("NEWMETHOD sip:bob@example.com SIP/2.0", common("INVITE")),
    400, "CSeq Method Does Not Match"))
C.append(Case(
    "4475", "3.1.2.19", "bigcode",
    "a response whose status code has many digits: dropped",
    message("SIP/2.0 4294967301 better not break the receiver",
            common("INVITE")), DROPPED))

# RFC 4475 section 3.2: transaction layer.
C.append(Case(
    "4475", "3.2.1", "badbranch",
    "a branch without the magic cookie (RFC 2543 matching)",
    message("OPTIONS sip:bob@example.com SIP/2.0",
            common("OPTIONS", via="SIP/2.0/UDP 192.0.2.7;branch=oldstyle1")),
    ACCEPTED))

# RFC 4475 section 3.3: application layer.
C.append(Case(
    "4475", "3.3.1", "insuf",
    "a request missing Call-ID, From and To",
    message("INVITE sip:bob@example.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKin", "Max-Forwards: 70",
        "CSeq: 1 INVITE"]), 400, "Missing From Header"))
C.append(Case(
    "4475", "3.3.2", "unkscm",
    "a Request-URI of an unknown scheme",
    message("OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
            common("OPTIONS")), 416, "Unsupported URI Scheme"))
C.append(Case(
    "4475", "3.3.3", "novelsc",
    "a Request-URI of a known but unusual scheme: we route only SIP and "
    "SIPS URIs", message("OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0",
                         common("OPTIONS")), 416, "Unsupported URI Scheme"))
C.append(Case(
    "4475", "3.3.4", "unksm2",
    "unknown schemes in To, From and Contact: only the URIs we use are "
    "read",
    message("REGISTER sip:example.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKuk",
        "Max-Forwards: 70", "To: isbn:2983792873",
        "From: <http://www.example.com>;tag=3234233",
        "Call-ID: unksm2@192.0.2.7", "CSeq: 1 REGISTER",
        "Contact: <name:John_Doe>"]), ACCEPTED))
C.append(Case(
    "4475", "3.3.5", "bext01",
    "Require and Proxy-Require naming unknown extensions",
    message("OPTIONS sip:bob@example.com SIP/2.0", common("OPTIONS") + [
        "Require: nothingSupportedHere",
        "Proxy-Require: noProxiesSupportThis, nothingSupportedHere"]),
    420, "Bad Extension"))
C.append(Case(
    "4475", "3.3.6", "invut",
    "an unknown Content-Type: for the UAS, not the proxy",
    message("INVITE sip:bob@example.com SIP/2.0", common("INVITE") + [
        "Accept: text/nobodyKnowsThis",
        "Content-Type: application/unknownformat"], b"<audio> <beep/> </audio>"),
    ACCEPTED))
C.append(Case(
    "4475", "3.3.7", "regaut01",
    "an Authorization of an unknown scheme: treated as absent",
    message("REGISTER sip:example.com SIP/2.0", common("REGISTER") + [
        "Authorization: NoOneKnowsThisScheme opaque-data=here"]), 401))
C.append(Case(
    "4475", "3.3.8", "multi01",
    "several values in single-value headers",
    message("INVITE sip:bob@example.com SIP/2.0", common("INVITE") + [
        "To: <sip:carol@example.com>", "Call-ID: other@192.0.2.7"]),
    400, "Duplicate To Header"))
C.append(Case(
    "4475", "3.3.9", "mcl01",
    "several Content-Length values",
    message("OPTIONS sip:bob@example.com SIP/2.0", common("OPTIONS") + [
        "Content-Length: 0", "l: 0"]), 400,
    "Duplicate Content-Length Header"))
C.append(Case(
    "4475", "3.3.10", "bcast",
    "a 200 whose Via names a broadcast received address and maddr: a "
    "response matching no transaction is dropped (never relayed)",
    message("SIP/2.0 200 OK", common(
        "INVITE", via="SIP/2.0/UDP 192.0.2.198;branch=z9hG4bKbc;"
        "received=255.255.255.255;maddr=255.255.255.255")), DROPPED))
C.append(Case(
    "4475", "3.3.11", "zeromf",
    "Max-Forwards 0 on an OPTIONS: a server may answer it itself",
    message("OPTIONS sip:example.com SIP/2.0",
            [h if not h.startswith("Max") else "Max-Forwards: 0"
             for h in common("OPTIONS")]), 200))
C.append(Case(
    "4475", "3.3.12", "cparam01",
    "a REGISTER whose Contact carries header parameters",
    message("REGISTER sip:example.com SIP/2.0", common("REGISTER")[:-1] + [
        "Contact: sip:alice@192.0.2.7;expires=60;q=0.5"]), 401))
C.append(Case(
    "4475", "3.3.13", "cparam02",
    "a REGISTER whose Contact URI carries a URI parameter (in brackets)",
    message("REGISTER sip:example.com SIP/2.0", common("REGISTER")[:-1] + [
        "Contact: <sip:alice@192.0.2.7;transport=tcp>;expires=60"]), 401))
C.append(Case(
    "4475", "3.3.14", "regescrt",
    "a REGISTER whose Contact URI carries an escaped Route header, in "
    "brackets (legal; the registrar authenticates first)",
    message("REGISTER sip:example.com SIP/2.0", common("REGISTER")[:-1] + [
        "Contact: <sip:alice@192.0.2.7?Route=%3Csip:sip.example.com%3E>"]),
    401))
C.append(Case(
    "4475", "3.3.15", "sdp01",
    "an Accept the UAS cannot satisfy: a proxy does not read it",
    message("INVITE sip:bob@example.com SIP/2.0", common("INVITE") + [
        "Accept: text/nobodyKnowsThis",
        "Content-Type: application/sdp"], SDP), ACCEPTED))
C.append(Case(
    "4475", "3.4.1", "inv2543",
    "an RFC 2543 INVITE: no branch, no Max-Forwards, no From tag",
    message("INVITE sip:bob@example.com SIP/2.0", [
        "Via: SIP/2.0/UDP 192.0.2.7", "From: sip:alice@example.com",
        "To: sip:bob@example.com", "Call-ID: inv2543@192.0.2.7",
        "CSeq: 1 INVITE", "Content-Type: application/sdp"], SDP), ACCEPTED))

# RFC 5118: IPv6.
C.append(Case(
    "5118", "4.1", "ipv6-good",
    "IPv6 references in the Request-URI, Via, From, To and Contact",
    message("REGISTER sip:[2001:db8::10] SIP/2.0", [
        "Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bK6g;rport",
        "Max-Forwards: 70", "From: <sip:alice@[2001:db8::10]>;tag=6g",
        "To: <sip:alice@[2001:db8::10]>", "Call-ID: ipv6-good@2001:db8::9:1",
        "CSeq: 1 REGISTER", "Contact: <sip:alice@[2001:db8::9:1]>"]),
    ACCEPTED))
C.append(Case(
    "5118", "4.2", "ipv6-bad",
    "an IPv6 address without brackets in the Request-URI",
    message("REGISTER sip:2001:db8::10 SIP/2.0", common("REGISTER")),
    400, "Bad Request-URI"))
C.append(Case(
    "5118", "4.3", "port-ambiguous",
    "an IPv6 reference whose last group looks like a port: it is part of "
    "the address", message("REGISTER sip:[2001:db8::10:5070] SIP/2.0",
                           common("REGISTER")), ACCEPTED))
C.append(Case(
    "5118", "4.4", "port-unambiguous",
    "an IPv6 reference followed by a port",
    message("REGISTER sip:[2001:db8::10]:5070 SIP/2.0", common("REGISTER")),
    ACCEPTED))
C.append(Case(
    "5118", "4.5", "via-received-param-with-delim",
    "a Via received parameter holding an IPv6 reference (brackets)",
    message("OPTIONS sip:bob@example.com SIP/2.0", common(
        "OPTIONS", via="SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKrd;"
        "received=[2001:db8::9:255]")), ACCEPTED))
C.append(Case(
    "5118", "4.5", "via-received-param-no-delim",
    "a Via received parameter holding an IPv6 address (no brackets)",
    message("OPTIONS sip:bob@example.com SIP/2.0", common(
        "OPTIONS", via="SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKrn;"
        "received=2001:db8::9:255")), ACCEPTED))
C.append(Case(
    "5118", "4.6", "ipv6-in-sdp",
    "an IPv6 address in the SDP body: bodies are not read",
    message("INVITE sip:bob@[2001:db8::10] SIP/2.0", common(
        "INVITE", via="SIP/2.0/UDP [2001:db8::20];branch=z9hG4bK6s") + [
        "Content-Type: application/sdp"], SDP6), ACCEPTED))
C.append(Case(
    "5118", "4.7", "mult-ip-in-header",
    "IPv4 and IPv6 Via values in one header line",
    message("BYE sip:bob@[2001:db8::10] SIP/2.0", [
        "Via: SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKm1, "
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKm2, "
        "SIP/2.0/UDP [2001:db8::9:255];branch=z9hG4bKm3;"
        "received=[2001:db8::9:255]"] + common("BYE")[1:]), ACCEPTED))
C.append(Case(
    "5118", "4.8", "mult-ip-in-sdp",
    "IPv4 and IPv6 addresses in one SDP body",
    message("INVITE sip:bob@example.com SIP/2.0", common("INVITE") + [
        "Content-Type: application/sdp"], SDP + b"c=IN IP6 2001:db8::7\r\n"),
    ACCEPTED))
C.append(Case(
    "5118", "4.9", "ipv4-mapped-ipv6",
    "an IPv4-mapped IPv6 address in brackets",
    message("INVITE sip:bob@example.com SIP/2.0", common(
        "INVITE", via="SIP/2.0/UDP [::ffff:192.0.2.10]:19823;branch=z9hG4bKmp")
        + ["Content-Type: application/sdp"], SDP), ACCEPTED))
C.append(Case(
    "5118", "4.10", "ipv6-correct-abnf-2-colons",
    "an IPv4-embedded IPv6 reference written with two colons",
    message("OPTIONS sip:[2001:db8::192.0.2.1] SIP/2.0",
            common("OPTIONS")), ACCEPTED))
C.append(Case(
    "5118", "4.10", "ipv6-bug-abnf-3-colons",
    "the same written with three colons, as RFC 3261's faulty ABNF "
    "allows: read liberally (the address is not used to route)",
    message("OPTIONS sip:[2001:db8:::192.0.2.1] SIP/2.0",
            common("OPTIONS")), ACCEPTED))

CORPUS = tuple(C)
del C
