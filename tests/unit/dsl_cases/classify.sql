-- Statements and the verdict dsl.classify gives each (tests/unit/test_dsl_cases.py).
-- A case is a `-- case:` line, `-- expect:` lines of key=value, and the statement text up to
-- the next case. Keys: kind, functions (sorted, comma-separated), operators (yes/no),
-- statements, step_error (the message), step_error_at (PostgreSQL's 1-based position),
-- rewritten (the text the server runs instead, when there is one: its beginning),
-- cron_at (the position given to an invalid cron expression's error).

-- case: an ordinary statement passes through
-- expect: kind=passthrough statements=1
SELECT 1

-- case: a DSL operator outside any df call is not pgdurable's business
-- expect: kind=passthrough statements=1
SELECT 'a' ~> 'b'

-- case: a table named df is not the df schema's functions
-- expect: kind=passthrough statements=1
SELECT df.x FROM df

-- case: a text the parser refuses goes to the server, which reports its own error
-- expect: kind=unparsable statements=0
SELEC df.start('SELECT 1')

-- case: df.start with a constant step
-- expect: kind=workflow functions=start operators=no statements=1
SELECT df.start($$SELECT 'Hello, durable world!' AS message$$)

-- case: the DSL operators inside df.start
-- expect: kind=workflow functions=start operators=yes statements=1
SELECT df.start('SELECT now() AS step1' |=> 't1' ~> 'SELECT pg_sleep(5)' ~> 'SELECT $t1.step1')

-- case: if/else and race and join
-- expect: kind=workflow functions=start operators=yes
SELECT df.start((('SELECT true' ?> 'SELECT 1') !> 'SELECT 2') ~> ('SELECT 3' & 'SELECT 4') ~> ('SELECT 5' | 'SELECT 6'))

-- case: a loop (the prefix @> is an operator, not a df call)
-- expect: kind=workflow functions=break,start operators=yes
SELECT df.start(@> ('SELECT 1' ~> df.break()))

-- case: builders without df.start are still pgdurable's calls
-- expect: kind=workflow functions=seq,sql operators=no
SELECT df.seq(df.sql('SELECT 1'), df.sql('SELECT 2'))

-- case: a quoted schema and function name
-- expect: kind=workflow functions=status
SELECT "df"."status"('0000abcd')

-- case: inspection functions
-- expect: kind=workflow functions=explain,instance_nodes
SELECT df.explain('x'), * FROM df.instance_nodes('x')

-- case: several statements, one of them a df call
-- expect: kind=workflow functions=setvar statements=3
SELECT 1; SELECT df.setvar('k', 'v'); SELECT 2

-- case: a step that does not parse fails df.start with the position inside the statement
-- expect: kind=workflow functions=start step_error=syntax error at or near "SELEC" step_error_at=18
-- expect: rewritten=SELECT df._step_syntax_error(
SELECT df.start('SELEC 1')

-- case: the second step of a chain, after a multi-byte character
-- (positions count characters; FORM reads as a column alias, so the error is at t)
-- expect: kind=workflow functions=start operators=yes step_error=syntax error at or near "t" step_error_at=50
-- expect: rewritten=SELECT df._step_syntax_error(
SELECT df.start('SELECT ''é''' ~> 'SELECT 1 FORM t')

-- case: a step with a $name reference is checked when it runs, not at df.start
-- expect: kind=workflow functions=start operators=yes
SELECT df.start('SELECT 1' |=> 'a' ~> 'SELECT $a + ')

-- case: a reference to a name no step defines fails df.start at the reference
-- expect: kind=workflow functions=start operators=yes step_error_at=55
-- expect: step_error=unknown named result "$nope": no step of this workflow is named "nope" (name one with |=> 'nope', or write $nope? where it may be missing)
-- expect: rewritten=SELECT df._step_syntax_error('unknown named result "$nope"
SELECT df.start('SELECT ''é''' |=> 'a' ~> 'SELECT $a, $nope.x')

-- case: optional references, and $ in literals, quoted names and comments, are left alone
-- expect: kind=workflow functions=as,sql,start
SELECT df.start(df.as('SELECT 1', 'a') ~> df.sql($$SELECT $nope?, $nope.x?, $a.*, '$b', "$c" -- $d$$))

-- case: a name might come from what the statement does not spell out: nothing is refused
-- expect: kind=workflow functions=start operators=yes
SELECT df.start('SELECT 1' |=> $1 ~> 'SELECT $n' ~> (SELECT g FROM graphs))

-- case: a cron expression's literal gets its position for the server's error
-- expect: kind=workflow functions=start,wait_for_schedule cron_at=38
SELECT df.start(df.wait_for_schedule('* * *'))

-- case: CREATE EXTENSION pg_durable becomes a check that the catalog is there
-- (its DO block's tag is renamed CREATE EXTENSION by the relay)
-- expect: kind=create_extension statements=1 rewritten=DO $pgdurable$DECLARE level text := current_setting('client_min_messages'); BEGIN IF to_regclass('df._migrations') IS NULL
CREATE EXTENSION pg_durable

-- case: CREATE EXTENSION among other statements keeps them
-- expect: kind=create_extension statements=2 rewritten=DO $pgdurable$
CREATE EXTENSION IF NOT EXISTS pg_durable; SELECT 1

-- case: another extension is not ours
-- expect: kind=passthrough statements=1
CREATE EXTENSION pg_stat_statements
