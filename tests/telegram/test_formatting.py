"""Model Markdown to Telegram HTML, checked with the fake server's Telegram-style HTML parser.

The inputs are the kind of text a small chat model writes: lists, nested and
unbalanced emphasis, code, links, and characters that are special in HTML.
"""

from __future__ import annotations

import re

import pytest

from bots.telegram_bot.formatting import markdown_to_html, plain_text, reply_text, transcript_text
from tests.telegram.fake_bot_api import visible_text


def words(text: str) -> list[str]:
    """The letters and digits of a text, in order, with every marker and space left out."""
    return re.findall(r"[^\W_]+", text)


def shown(markdown: str) -> list[str]:
    """The words a reader should see: the Markdown's, less link targets and code-fence languages."""
    return words(re.sub(r"\]\([^)]*\)|^```\w+$", "]", markdown, flags=re.MULTILINE))


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("plain <text> & more", "plain &lt;text&gt; &amp; more"),
        ("if a < b && b > c: print('<ok>')", "if a &lt; b &amp;&amp; b &gt; c: print('&lt;ok&gt;')"),
        ("<b>raw tags</b> are text", "&lt;b&gt;raw tags&lt;/b&gt; are text"),
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("an *italic* word, 2 * 3 * 4", "an <i>italic</i> word, 2 * 3 * 4"),
        ("~~wrong~~ right", "<s>wrong</s> right"),
        ("**bold *and italic***", "<b>bold <i>and italic</i></b>"),
        ("***all of it***", "<i><b>all of it</b></i>"),
        (
            "**Note:** use `len(xs) < 3` *only* here",
            "<b>Note:</b> use <code>len(xs) &lt; 3</code> <i>only</i> here",
        ),
        ("**always call `close()` first**", "<b>always call <code>close()</code> first</b>"),
        ("call `f(x) < 1`", "call <code>f(x) &lt; 1</code>"),
        ("`**not bold**`", "<code>**not bold**</code>"),
        ("snake_case_name stays", "snake_case_name stays"),
        # Unbalanced markers stay as written: a half-streamed reply, a lone star.
        ("**half-streamed", "**half-streamed"),
        ("This is **unclosed and *this too", "This is **unclosed and *this too"),
        ("I rate it 4.5 * out of 5", "I rate it 4.5 * out of 5"),
        ("a lone `tick and a * star", "a lone `tick and a * star"),
        ("## Heading", "<b>Heading</b>"),
        ("# Paris\nThe capital of **France**.", "<b>Paris</b>\n\nThe capital of <b>France</b>."),
        (
            "Here are some tips:\n\n* Drink water\n* Sleep **8 hours**\n* Walk daily",
            "Here are some tips:\n\n• Drink water\n• Sleep <b>8 hours</b>\n• Walk daily",
        ),
        (
            "To boil an egg:\n1. Boil water.\n2. Add the egg.\n3. Wait *7 minutes*.\n\nEnjoy!",
            "To boil an egg:\n\n1. Boil water.\n2. Add the egg.\n3. Wait <i>7 minutes</i>.\n\nEnjoy!",
        ),
        (
            "1. Fruits:\n   - apples\n   - pears\n2. Vegetables",
            "1. Fruits:\n   • apples\n   • pears\n2. Vegetables",
        ),
        ("3. third\n4. fourth", "3. third\n4. fourth"),
        ("- first\n\n- second", "• first\n\n• second"),
        (
            "```python\nif a < b:\n    pass\n```",
            '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>',
        ),
        (
            "Run this:\n```bash\necho 'a && b' > out.txt\n```\nThen check **out.txt**.",
            "Run this:\n\n<pre><code class=\"language-bash\">echo 'a &amp;&amp; b' &gt; out.txt</code></pre>"
            "\n\nThen check <b>out.txt</b>.",
        ),
        ("```\nno language, **no bold**\n```", "<pre><code>no language, **no bold**</code></pre>"),
        (
            "```python\ndef half_streamed():",
            '<pre><code class="language-python">def half_streamed():</code></pre>',
        ),
        (
            "see [docs](https://example.com/a?b=1&c=2)",
            'see <a href="https://example.com/a?b=1&amp;c=2">docs</a>',
        ),
        (
            "Read [the **official** guide](https://docs.python.org/3/) first.",
            'Read <a href="https://docs.python.org/3/">the <b>official</b> guide</a> first.',
        ),
        ("<https://example.com>", '<a href="https://example.com">https://example.com</a>'),
        ("[a local file](notes/todo.md) stays text", "a local file stays text"),
        ("> Be kind.\n\n— someone", "<blockquote>Be kind.</blockquote>\n\n— someone"),
        ("> outer\n> > inner", "<blockquote>outer\n\ninner</blockquote>"),
        ("above\n\n---\n\nbelow", "above\n\n———\n\nbelow"),
    ],
)
def test_markdown_becomes_telegram_html(markdown: str, html: str) -> None:
    assert markdown_to_html(markdown) == html
    seen = visible_text(html, "HTML")  # Telegram's parser accepts it
    assert words(seen) == shown(markdown)  # and the reader loses no word


def test_a_link_telegram_cannot_open_is_not_a_link() -> None:
    assert markdown_to_html("[click](javascript:alert(1))") == "[click](javascript:alert(1))"


def test_a_reply_keeps_its_markdown_as_the_plain_fallback() -> None:
    reply = reply_text("A **bold** claim & a <tag>")
    assert reply.html == "A <b>bold</b> claim &amp; a &lt;tag&gt;"
    assert reply.plain == "A **bold** claim & a <tag>"


def test_the_bots_own_text_is_escaped_not_formatted() -> None:
    notice = plain_text("Send **/help** for <commands> & more")
    assert notice.html == "Send **/help** for &lt;commands&gt; &amp; more"
    assert visible_text(notice.html, "HTML") == notice.plain


def test_transcript_is_quoted_and_escaped() -> None:
    quoted = transcript_text("is 3 < 4?")
    assert quoted.html == "<blockquote>🎤 is 3 &lt; 4?</blockquote>"
    assert visible_text(quoted.html, "HTML") == "🎤 is 3 < 4?"
    assert quoted.plain == "🎤 “is 3 < 4?”"
