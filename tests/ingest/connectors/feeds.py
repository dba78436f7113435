"""Feed documents shaped like real ones (RSS 2.0, Atom 1.0, RSS 0.91) and hostile XML samples."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime


def rss_item(n: int, *, guid: str | None = None, day: int = 1) -> str:
    when = format_datetime(datetime(2025, 3, day, 9, n % 60, tzinfo=UTC), usegmt=True)
    guid_xml = f'<guid isPermaLink="false">{guid}</guid>' if guid else ""
    return f"""
    <item>
      <title>Acme &amp; friends, part {n}</title>
      <link>https://www.blog.example.com/posts/{n}</link>
      {guid_xml}
      <dc:creator><![CDATA[Jane Doe]]></dc:creator>
      <pubDate>{when}</pubDate>
      <category>Reviews</category>
      <description><![CDATA[<p>Short take {n} on <b>Acme</b>&nbsp;phones.</p>]]></description>
      <content:encoded><![CDATA[<p>Full review {n}: the <a href="https://acme.example">Acme</a> X2 is great.</p>
        <script>alert('x')</script><p>Battery&nbsp;life is long.</p>]]></content:encoded>
    </item>"""


def rss(*items: str, language: str = "en-us") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom">
  <channel>
    <title>Example Tech Blog</title>
    <link>https://www.blog.example.com/</link>
    <atom:link href="https://www.blog.example.com/feed" rel="self" type="application/rss+xml"/>
    <description>Reviews and news</description>
    <language>{language}</language>
    <lastBuildDate>Sat, 01 Mar 2025 10:00:00 GMT</lastBuildDate>
    {"".join(items)}
  </channel>
</rss>
""".encode()


ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr">
  <title>Forum Acme &#8211; fils r\xc3\xa9cents</title>
  <link href="https://forum.example.fr/"/>
  <link rel="self" href="https://forum.example.fr/feed.atom"/>
  <updated>2025-03-02T12:00:00Z</updated>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <entry>
    <title type="html">Le SAV d&apos;Acme &lt;b&gt;ne r\xc3\xa9pond pas&lt;/b&gt;</title>
    <link href="https://forum.example.fr/t/123"/>
    <id>tag:forum.example.fr,2025:thread-123</id>
    <updated>2025-03-02T11:30:00Z</updated>
    <published>2025-03-02T11:00:00+01:00</published>
    <author><name>marie</name><uri>https://forum.example.fr/u/marie</uri></author>
    <summary>R\xc3\xa9sum\xc3\xa9 court</summary>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">
      <p>Trois semaines sans r\xc3\xa9ponse du service client.</p></div></content>
  </entry>
  <entry>
    <title>Sans auteur</title>
    <link href="https://forum.example.fr/t/124"/>
    <id>tag:forum.example.fr,2025:thread-124</id>
    <updated>2025-03-02T11:45:00Z</updated>
    <summary>Un autre fil</summary>
  </entry>
</feed>
"""

RSS_091 = b"""<?xml version="1.0" encoding="ISO-8859-1"?>
<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "http://my.netscape.com/publish/formats/rss-0.91.dtd">
<rss version="0.91"><channel><title>Old school</title><link>http://old.example.com/</link>
<description>d</description><language>en</language>
<item><title>Caf\xe9 news</title><link>http://old.example.com/1</link><description>Acme caf\xe9</description></item>
</channel></rss>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>&lol9;</title>
<item><title>&lol9;</title><link>https://x.example/1</link><description>&lol9;</description></item>
</channel></rss>
"""


def quadratic_blowup(size: int = 100_000, refs: int = 100_000) -> bytes:
    """One large entity referenced many times: no nesting, still gigabytes once expanded."""
    entity = "A" * size
    body = "&a;" * refs
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY a "{entity}">]>\n'
        f'<rss version="2.0"><channel><title>t</title><item><title>x</title><description>{body}</description>'
        "</item></channel></rss>"
    ).encode()


def xxe(path: str) -> bytes:
    return f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{path}">]>
<rss version="2.0"><channel><title>t</title>
<item><title>&xxe;</title><link>https://x.example/1</link><description>&xxe;</description></item>
</channel></rss>
""".encode()


def xxe_parameter(path: str) -> bytes:
    return f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY % remote SYSTEM "file://{path}"> %remote;]>
<rss version="2.0"><channel><title>t</title><item><title>x</title><link>https://x.example/1</link></item></channel></rss>
""".encode()


def external_dtd(path: str) -> bytes:
    return f"""<?xml version="1.0"?>
<!DOCTYPE rss SYSTEM "file://{path}">
<rss version="2.0"><channel><title>t</title>
<item><title>x &secret;</title><link>https://x.example/1</link><description>d</description></item>
</channel></rss>
""".encode()
