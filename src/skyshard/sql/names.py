"""Output column names as MySQL gives them: an alias, a column's name, and for any other
expression the text the user typed (``count(*)``, ``ra  +  2``), not a re-rendering of
it (``COUNT(*)``, ``ra + 2``) and never an engine's name (``count_star()``).

>>> select_texts("SELECT count(*), Max(decl) AS m, ra  +  2 FROM Object")
['count(*)', 'Max(decl) AS m', 'ra  +  2']
>>> select_texts("SET @r = 1; SELECT DISTINCT f(a, (b)), c FROM t INTO @x")
['f(a, (b))', 'c']
>>> select_texts("SELECT 1 UNION SELECT 2") is None
True
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType

from skyshard.sql.dialect import QservDialect

_OPEN = {TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE}
_CLOSE = {TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE}
#: Words that end a select list at the top level.
_END = {"FROM", "INTO", "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "WINDOW", "UNION",
        "EXCEPT", "INTERSECT", "FOR", "LOCK"}
_MODIFIERS = {"DISTINCT", "ALL", "DISTINCTROW", "STRAIGHT_JOIN", "HIGH_PRIORITY",
              "SQL_CALC_FOUND_ROWS", "SQL_NO_CACHE", "SQL_CACHE", "SQL_SMALL_RESULT",
              "SQL_BIG_RESULT", "SQL_BUFFER_RESULT"}


def output_names(parsed: exp.Expression, expanded: exp.Expression, sql: str) -> list[str] | None:
    """The names of ``expanded``'s output columns (``parsed`` with ``*`` expanded), with
    expressions named by their text in ``sql`` where it can be matched item by item."""
    if not isinstance(expanded, exp.Select):
        return None
    names = [_name(e) for e in expanded.expressions]
    if not isinstance(parsed, exp.Select) or all(
            _is_star(e) or _is_plain(e) for e in parsed.expressions):
        return names  # aliases, columns and stars: no text to read
    texts = select_texts(sql)
    if texts is None or len(texts) != len(parsed.expressions):
        return names
    stars = [i for i, e in enumerate(parsed.expressions) if _is_star(e)]
    width = len(expanded.expressions) - (len(parsed.expressions) - len(stars))
    if len(stars) > 1 or (not stars and width != 0) or width < 0:
        return names
    out: list[str] = []
    pos = 0
    for e, text in zip(parsed.expressions, texts, strict=True):
        if _is_star(e):
            out += names[pos:pos + width]
            pos += width
            continue
        out.append(names[pos] if _is_plain(e) else text)
        pos += 1
    return out


def select_texts(sql: str) -> list[str] | None:
    """The items of the last statement's top-level select list, as typed; None when
    there is no single plain SELECT to read them from."""
    try:
        tokens = QservDialect().tokenize(sql)
    except (SqlglotError, ValueError):
        return None
    statement = _last_statement(tokens)
    if not statement or statement[0].token_type is not TokenType.SELECT:
        return None
    items: list[list[Token]] = [[]]
    depth = 0
    i = 1
    while i < len(statement) and statement[i].text.upper() in _MODIFIERS:
        i += 1
    for tok in statement[i:]:
        if tok.token_type in _OPEN:
            depth += 1
        elif tok.token_type in _CLOSE:
            depth -= 1
        elif depth == 0 and tok.text.upper() in _END:
            break
        elif depth == 0 and tok.token_type is TokenType.COMMA:
            items.append([])
            continue
        items[-1].append(tok)
    if any(not item for item in items):
        return None
    rest = statement[statement.index(items[-1][-1]) + 1:]
    if any(t.text.upper() in {"UNION", "EXCEPT", "INTERSECT"} for t in rest):
        return None
    return [sql[item[0].start:item[-1].end + 1] for item in items]


def _last_statement(tokens: list[Token]) -> list[Token]:
    statements: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.token_type in _OPEN:
            depth += 1
        elif tok.token_type in _CLOSE:
            depth -= 1
        if depth == 0 and tok.token_type is TokenType.SEMICOLON:
            statements.append([])
            continue
        statements[-1].append(tok)
    nonempty = [s for s in statements if s]
    return nonempty[-1] if nonempty else []


def _is_star(e: exp.Expression) -> bool:
    return isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))


def _is_plain(e: exp.Expression) -> bool:
    """Named without its text: an alias, or a column."""
    return isinstance(e, exp.Alias) or (isinstance(e, exp.Column)
                                        and not isinstance(e.this, exp.Star))


def _name(e: exp.Expression) -> str:
    if isinstance(e, exp.Alias):
        return e.alias
    if isinstance(e, exp.Column) and not isinstance(e.this, exp.Star):
        return e.name
    return e.sql(dialect=QservDialect)
