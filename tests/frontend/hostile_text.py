"""Text a hostile backend (or a person naming a file) could send, and how to check it is shown literally.

``hostile_texts(pixel)`` lists strings that Markdown, HTML, GitHub-flavoured Markdown, KaTeX or one of
Streamlit's own extensions would turn into something else: images and links to ``pixel`` (a URL
whose every hit the tests count), colours, icons, arrows. ``rendered`` parses Markdown with a
CommonMark parser (markdown-it-py, with GFM tables and strikethrough) and returns the text a browser
would show and the kinds of elements it would make; ``streamlit_rewrites`` finds what Streamlit's
page would still rewrite in that text (the patterns of its Markdown plugins, Streamlit 1.67).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from markdown_it import MarkdownIt

WORD_JOINER = "\u2060"


def hostile_texts(pixel: str) -> list[str]:
    """Strings that must be shown as typed; ``pixel`` is a URL nothing may ever fetch."""
    return [
        f"![x]({pixel}/markdown-image.png)",
        f"<img src={pixel}/html-image.png>",
        f"[click me]({pixel}/link)",
        f"<{pixel}/autolink>",
        f"{pixel}/bare-link",
        "www.attacker.example",
        "someone@attacker.example",
        ":red[red text] :blue-background[on blue] :rainbow[rainbow] :red-badge[badge]",
        ":material/home: and :material_home:",
        ":streamlit: logo",
        ":smile: :+1: emoji",
        "$x^2$ and $$y$$",
        "**bold** _italic_ `code` ~~struck~~",
        "# heading",
        "a -> b <- c <-> d -- e >= f <= g ~= h",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "&amp; &lt;b&gt; &#x41;",
        "> quoted\n\n1. listed\n- item",
        f"[ref]\n\n[ref]: {pixel}/reference",
        "back\\slash \\* star \\",
        "gpj.\u202eexe",
    ]


# The Markdown parser Streamlit's uses (remark) is CommonMark plus GFM: so is this one.
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


@dataclass(frozen=True)
class Rendered:
    text: str  # what a browser shows (word joiners removed: they are invisible)
    kinds: frozenset[str]  # the kinds of element made, e.g. {"paragraph", "text", "strong"}


def rendered(markdown: str) -> Rendered:
    """The visible text and element kinds of ``markdown`` (block and inline), as CommonMark renders it."""
    kinds: set[str] = set()
    parts: list[str] = []
    for token in _MARKDOWN.parse(markdown):
        kinds.add(token.type.removesuffix("_open").removesuffix("_close"))
        for child in token.children or ():
            kinds.add(child.type.removesuffix("_open").removesuffix("_close"))
            if child.type in ("text", "code_inline"):
                parts.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                parts.append("\n")
        if token.type in ("code_block", "fence", "html_block"):
            parts.append(token.content)
    return Rendered("".join(parts).replace(WORD_JOINER, ""), frozenset(kinds))


# What Streamlit's Markdown plugins rewrite in text nodes, after escapes are resolved (from its
# StreamlitMarkdown component): material icons, its logo, emoji shortcodes, arrows, GFM autolinks.
_STREAMLIT_TEXT_REWRITES = {
    "material icon": re.compile(r":material_\w+:"),
    "streamlit logo": re.compile(r":streamlit:"),
    "emoji": re.compile(r":\+1:|:-1:|:[\w-]+:", re.ASCII),
    "arrow": re.compile(r"(^|\s)(<->|->|<-|--|>=|<=|~=)(\s|$)"),
    "e-mail": re.compile(r"[-.\w+]+@[-\w]+(\.[-\w]+)+"),
}
_LINK = re.compile(r"https?://|www\.", re.IGNORECASE)


def _bare_link(text: str) -> bool:
    """GFM's autolink literal: http://, https:// or www. after the start, whitespace, punctuation or a symbol."""
    for match in _LINK.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isspace() or unicodedata.category(before)[0] in "PS":
            return True
    return False


def streamlit_rewrites(markdown: str) -> list[str]:
    """Which of Streamlit's text rewrites would apply to the text of ``markdown`` (word joiners kept)."""
    visible_with_joiners = "".join(
        child.content for token in _MARKDOWN.parse(markdown) for child in token.children or () if child.type == "text"
    )
    found = [name for name, pattern in _STREAMLIT_TEXT_REWRITES.items() if pattern.search(visible_with_joiners)]
    if _bare_link(visible_with_joiners):
        found.append("link")
    if ":material/" in markdown:  # replaced in the Markdown source, before parsing
        found.append("material icon (source)")
    return found


def as_shown(text: str) -> str:
    """``text`` as the page shows it: on one line, invisible controls replaced (see escape_markdown)."""
    text = " ".join(text.split())
    return re.sub(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]", "\ufffd", text)
