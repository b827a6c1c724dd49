"""multipart/mixed userData, split and joined without rewriting anything the user wrote.

Karpenter's own handling (aws/karpenter-provider-aws pkg/providers/amifamily/bootstrap/mime/mime.go and
eksbootstrap.go): MIME is detected on the *trimmed* text by a
`MIME-Version:` or `Content-Type:` prefix; AL2 keeps every part's headers and body, AL2023 keeps only each
part's Content-Type. We split on the delimiter lines of the document's own boundary and keep every other
byte (headers, preamble, each part, the closing delimiter and epilogue) exactly as given, so replacing or
inserting one part leaves the user's parts byte-identical. RFC 2046 §5.1.1: the line break before a
delimiter belongs to the delimiter, so a part's body is the text up to, not including, that line break.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.parser import HeaderParser

SHELL = 'text/x-shellscript; charset="us-ascii"'  # what Karpenter wraps a bare script in
NODECONFIG = "application/node.eks.aws"  # AL2023 nodeadm NodeConfig
DEFAULT_BOUNDARY = "BOUNDARY"
KARPENTER_BOUNDARY = "--//"  # the delimiter of the document Karpenter hands to EC2 (AL2, AL2023)


class MimeError(ValueError):
    pass


def is_mime(text: str) -> bool:
    head = text.lstrip()
    return head.startswith("MIME-Version:") or head.startswith("Content-Type:")


@dataclass
class Part:
    delimiter: str  # the delimiter line as written, without its line break ("--BOUNDARY")
    chunk: str  # everything after the delimiter line up to the next delimiter line (line breaks included)

    @property
    def _split(self) -> tuple[str, str]:
        text = self.chunk
        text = text[2:] if text.startswith("\r\n") else text[1:] if text.startswith("\n") else text
        m = re.search(r"\r?\n\r?\n", text)
        if not m:
            return text, ""
        headers, body = text[: m.start()], text[m.end() :]
        return headers, re.sub(r"\r?\n\Z", "", body)  # the final line break belongs to the next delimiter

    @property
    def headers(self) -> dict[str, str]:
        msg = HeaderParser().parsestr(self._split[0] + "\n\n")
        return {k.lower(): str(v) for k, v in msg.items()}

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "text/plain").split(";")[0].strip().lower()

    @property
    def body(self) -> str:
        return self._split[1]

    @classmethod
    def build(cls, boundary: str, headers: dict[str, str], body: str) -> Part:
        # Karpenter re-joins every part under its own boundary "//" (eksbootstrap.go), so that must not
        # occur either
        for line in body.splitlines():
            if line.startswith((f"--{boundary}", KARPENTER_BOUNDARY)):
                raise MimeError(f"a part body line starts with a MIME delimiter ({line[:30]!r})")
        head = "".join(f"{k}: {v}\n" for k, v in headers.items())
        return cls(f"--{boundary}", f"\n{head}\n{body}\n")


@dataclass
class Multipart:
    head: str  # the top-level headers and the blank line after them, as written
    boundary: str
    preamble: str = ""
    parts: list[Part] = field(default_factory=list)
    closing: str | None = None  # "--BOUNDARY--" as written, or None when the document never closes
    epilogue: str = ""

    def render(self) -> str:
        out = [self.head, self.preamble]
        for part in self.parts:
            out += [part.delimiter, part.chunk]
        if self.closing is not None:
            out += [self.closing, self.epilogue]
        return "".join(out)


def new_document(boundary: str = DEFAULT_BOUNDARY) -> Multipart:
    return Multipart(
        f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{boundary}"\n\n',
        boundary,
        closing=f"--{boundary}--",
        epilogue="\n",
    )


def parse(text: str) -> Multipart:
    if not is_mime(text):
        raise MimeError("not a MIME document (no MIME-Version: or Content-Type: at the start)")
    m = re.search(r"\r?\n\r?\n", text)
    if not m:
        raise MimeError("MIME headers are not followed by a blank line")
    head, body = text[: m.end()], text[m.end() :]
    msg = HeaderParser().parsestr(head.lstrip())
    if msg.get_content_type() != "multipart/mixed":
        raise MimeError(f"top-level Content-Type is {msg.get_content_type()}, expected multipart/mixed")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MimeError("multipart/mixed without a boundary parameter")
    doc = Multipart(head, boundary)
    delimiters = list(re.finditer(rf"^--{re.escape(boundary)}(--)?[ \t]*(?=\r?$)", body, re.M))
    if not delimiters:
        raise MimeError(f"no part delimiter --{boundary} in the document")
    doc.preamble = body[: delimiters[0].start()]
    for i, d in enumerate(delimiters):
        end = delimiters[i + 1].start() if i + 1 < len(delimiters) else len(body)
        if d.group(1):  # closing delimiter: the rest is epilogue
            doc.closing, doc.epilogue = d.group(0), body[d.end() :]
            break
        doc.parts.append(Part(d.group(0), body[d.end() : end]))
    return doc
