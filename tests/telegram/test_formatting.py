"""Model Markdown to Telegram HTML, checked with the fake server's Telegram-style HTML parser."""

from __future__ import annotations

import pytest

from bots.telegram_bot.formatting import markdown_to_html, transcript_text
from tests.telegram.fake_bot_api import visible_text


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("plain <text> & more", "plain &lt;text&gt; &amp; more"),
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("an *italic* word, 2 * 3 * 4", "an <i>italic</i> word, 2 * 3 * 4"),
        ("* a list item\n* another", "* a list item\n* another"),
        ("## Heading", "<b>Heading</b>"),
        ("call `f(x) < 1`", "call <code>f(x) &lt; 1</code>"),
        (
            "```python\nif a < b:\n    pass\n```",
            '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>',
        ),
        (
            "see [docs](https://example.com/a?b=1&c=2)",
            'see <a href="https://example.com/a?b=1&amp;c=2">docs</a>',
        ),
        ("snake_case_name stays", "snake_case_name stays"),
        ("**half-streamed", "**half-streamed"),
    ],
)
def test_markdown_becomes_telegram_html(markdown: str, html: str) -> None:
    assert markdown_to_html(markdown) == html
    visible_text(html, "HTML")  # Telegram's parser accepts it


def test_code_is_not_formatted_inside() -> None:
    assert markdown_to_html("`**not bold**`") == "<code>**not bold**</code>"


def test_transcript_is_quoted_and_escaped() -> None:
    quoted = transcript_text("is 3 < 4?")
    assert quoted.html == "<blockquote>🎤 is 3 &lt; 4?</blockquote>"
    assert visible_text(quoted.html, "HTML") == "🎤 is 3 < 4?"
    assert quoted.plain == "🎤 “is 3 < 4?”"
