"""The text/event-stream parser: the WHATWG parsing rules, fed in pieces as reads arrive."""

from __future__ import annotations

import pytest

from exporter.sse import SSEEvent, SSEParser


def parse(*reads: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    return [event for chunk in reads for event in parser.feed(chunk)]


CHAT = (b'data: {"a":1}\n\n'
        b": keep-alive comment\n\n"
        b"data: [DONE]\n\n")
RESPONSES = (b"event: response.created\ndata: {\"n\":0}\n\n"
             b"event: response.completed\ndata: {\"n\":1}\n\n")


def test_data_events_and_comments():
    assert parse(CHAT) == [SSEEvent("message", '{"a":1}'), SSEEvent("message", "[DONE]")]


def test_named_events_and_the_name_does_not_leak_to_the_next():
    assert parse(RESPONSES + b"data: x\n\n") == [
        SSEEvent("response.created", '{"n":0}'), SSEEvent("response.completed", '{"n":1}'),
        SSEEvent("message", "x")]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_end(end):
    stream = (RESPONSES + CHAT).replace(b"\n", end)
    assert parse(stream) == parse(RESPONSES + CHAT)


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_split_at_every_byte_gives_the_same_events(end):
    stream = ("\ufeff".encode() + RESPONSES + CHAT + "data: é\n\n".encode()).replace(
        b"\n", end)
    whole = parse(stream)
    assert whole[-1] == SSEEvent("message", "é") and len(whole) == 5
    assert parse(*(stream[i:i + 1] for i in range(len(stream)))) == whole
    for cut in range(len(stream)):
        assert parse(stream[:cut], stream[cut:]) == whole, cut


def test_a_crlf_split_across_reads_is_one_line_end():
    # "\r" ends one read, "\n" opens the next: one line end, not a blank line in between
    # (a blank line would dispatch the event before its second data line).
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent("message", "a\nb")]


def test_multi_line_data_and_field_rules():
    stream = (b"data: first\n"
              b"data:second\n"        # no space after the colon: kept as is
              b"data:  third\n"       # only one space is dropped
              b"data\n"               # a field name alone: empty value
              b"id: 7\nretry: 100\nfoo: bar\n"  # ignored fields
              b"\n")
    assert parse(stream) == [SSEEvent("message", "first\nsecond\n third\n")]


def test_an_event_without_data_is_not_dispatched():
    assert parse(b"event: ping\n\n: only a comment\n\n\n\n") == []


def test_an_unfinished_event_at_the_end_is_dropped():
    parser = SSEParser()
    assert parser.feed(b"data: complete\n\ndata: cut in the mid") == [
        SSEEvent("message", "complete")]
    assert parser.feed(b"dle\n") == []  # still no blank line: nothing dispatched


def test_bytes_that_are_not_utf8_do_not_raise():
    assert parse(b"data: \xff\xfe\n\n") == [SSEEvent("message", "\ufffd\ufffd")]
