// pgJDBC acceptance matrix, run through pgdurable by tests/acceptance/test_jdbc.py.
//
// Usage (single-file source launch, no javac needed):
//   java -cp postgresql.jar JdbcMatrix.java PORT USER PASSWORD [USER PASSWORD ...]
//
// The first USER/PASSWORD pair is the main login used by every case; every pair is also
// checked by the "auth" case. Output is one "key=value" per line on stdout. Each case prints
// "<case>.ok=true" when all its checks passed, or "<case>.error=<message>" (stack trace on
// stderr). The last line is "done=<failed case count>"; the exit status is 1 if any case
// failed.

import java.lang.reflect.Method;
import java.math.BigDecimal;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.sql.Types;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.Properties;
import java.util.StringJoiner;
import java.util.UUID;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.jdbc.PgResultSet;

public class JdbcMatrix {
    interface Case {
        void run() throws Exception;
    }

    static int port;
    static String user;
    static String password;
    static final List<String[]> logins = new ArrayList<>();
    static final List<String> failed = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        if (args.length < 3 || args.length % 2 != 1) {
            System.err.println("usage: JdbcMatrix PORT USER PASSWORD [USER PASSWORD ...]");
            System.exit(2);
        }
        port = Integer.parseInt(args[0]);
        for (int i = 1; i < args.length; i += 2) {
            logins.add(new String[] {args[i], args[i + 1]});
        }
        user = logins.get(0)[0];
        password = logins.get(0)[1];
        out("driver", org.postgresql.util.DriverInfo.DRIVER_VERSION);

        runCase("auth", JdbcMatrix::auth);
        runCase("statement", JdbcMatrix::statement);
        runCase("prepared", JdbcMatrix::prepared);
        runCase("batch", JdbcMatrix::batch);
        runCase("tx", JdbcMatrix::transactions);
        runCase("savepoint", JdbcMatrix::savepoint);
        runCase("error_tx", JdbcMatrix::errorInTransaction);
        runCase("error_prepared", JdbcMatrix::errorInPrepared);
        runCase("error_batch", JdbcMatrix::errorInBatch);
        runCase("fetch", JdbcMatrix::fetchSize);
        runCase("notify", JdbcMatrix::notifications);
        runCase("cancel", JdbcMatrix::cancel);

        out("done", failed.size());
        System.out.flush();
        System.exit(failed.isEmpty() ? 0 : 1);
    }

    // -- helpers ---------------------------------------------------------------------------

    static void out(String key, Object value) {
        String text = String.valueOf(value).replace("\r", "\\r").replace("\n", "\\n");
        System.out.println(key + "=" + text);
        System.out.flush();
    }

    static void runCase(String name, Case body) {
        long start = System.nanoTime();
        try {
            body.run();
            out(name + ".ok", "true");
        } catch (Throwable t) {
            failed.add(name);
            String state = t instanceof SQLException ? " [" + ((SQLException) t).getSQLState() + "]" : "";
            out(name + ".error", t.getClass().getSimpleName() + state + ": " + t.getMessage());
            System.err.println("case " + name + " failed:");
            t.printStackTrace();
        }
        out(name + ".ms", (System.nanoTime() - start) / 1_000_000);
    }

    static Connection connect(String login, String secret) throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", login);
        props.setProperty("password", secret);
        props.setProperty("ApplicationName", "jdbc-matrix");
        props.setProperty("connectTimeout", "10");
        props.setProperty("loginTimeout", "10");
        props.setProperty("socketTimeout", "30");
        return DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + port + "/postgres", props);
    }

    static Connection connect() throws SQLException {
        return connect(user, password);
    }

    static void check(String what, Object expected, Object actual) {
        if (!Objects.deepEquals(expected, actual)) {
            throw new AssertionError(what + ": expected <" + show(expected) + "> got <" + show(actual) + ">");
        }
    }

    static String show(Object value) {
        if (value instanceof byte[]) {
            return Arrays.toString((byte[]) value);
        }
        if (value instanceof int[]) {
            return Arrays.toString((int[]) value);
        }
        return String.valueOf(value);
    }

    static Object scalar(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            if (!rs.next()) {
                throw new AssertionError("no row from: " + sql);
            }
            return rs.getObject(1);
        }
    }

    static String column(Connection conn, String sql) throws SQLException {
        StringJoiner joined = new StringJoiner(",");
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            while (rs.next()) {
                joined.add(String.valueOf(rs.getObject(1)));
            }
        }
        return joined.toString();
    }

    static SQLException expectSqlError(String sqlstate, Case body) throws Exception {
        try {
            body.run();
        } catch (SQLException e) {
            check("sqlstate of " + e.getMessage(), sqlstate, e.getSQLState());
            return e;
        }
        throw new AssertionError("expected SQLSTATE " + sqlstate + " but the statement succeeded");
    }

    static boolean isBinary(ResultSet rs, int column) throws Exception {
        PgResultSet pg = rs.unwrap(PgResultSet.class);
        Method method = PgResultSet.class.getDeclaredMethod("isBinary", int.class);
        method.setAccessible(true);
        return (Boolean) method.invoke(pg, column);
    }

    // -- cases -----------------------------------------------------------------------------

    /** Every login of the matrix (SCRAM first), and a wrong password gets the server's error. */
    static void auth() throws Exception {
        for (String[] login : logins) {
            try (Connection conn = connect(login[0], login[1])) {
                String who = column(conn, "select current_user || '/' || session_user");
                out("auth." + login[0], who);
                check("current_user/session_user", login[0] + "/" + login[0], who);
            }
        }
        SQLException e = expectSqlError("28P01", () -> connect(user, password + "-wrong").close());
        out("auth.wrong_password.sqlstate", e.getSQLState());
        check("wrong password message", true, e.getMessage().contains("password authentication failed"));
    }

    /** Plain java.sql.Statement: a row of mixed types, multi-statement text, a big result. */
    static void statement() throws Exception {
        try (Connection conn = connect(); Statement st = conn.createStatement()) {
            try (ResultSet rs = st.executeQuery(
                    "select 1 as a, 'x'::text as b, null::int as c, 2.5::float8 as d, 'ünï' as e")) {
                check("has row", true, rs.next());
                String row = rs.getInt("a") + "|" + rs.getString("b") + "|" + rs.getObject("c") + "|"
                        + rs.getDouble("d") + "|" + rs.getString("e");
                out("statement.row", row);
                check("row", "1|x|null|2.5|ünï", row);
                check("single row", false, rs.next());
            }
            check("first of multi", true, st.execute("select 1; select 2"));
            int first;
            try (ResultSet rs = st.getResultSet()) {
                rs.next();
                first = rs.getInt(1);
            }
            check("second of multi", true, st.getMoreResults());
            int second;
            try (ResultSet rs = st.getResultSet()) {
                rs.next();
                second = rs.getInt(1);
            }
            out("statement.multi", first + "," + second);
            check("multi", "1,2", first + "," + second);

            long rows = 0;
            long sum = 0;
            long chars = 0;
            try (ResultSet rs = st.executeQuery(
                    "select g, repeat('x', 200) from generate_series(1, 20000) g")) {
                while (rs.next()) {
                    rows++;
                    sum += rs.getLong(1);
                    chars += rs.getString(2).length();
                }
            }
            out("statement.big", rows + "/" + sum + "/" + chars);
            check("big result", "20000/200010000/4000000", rows + "/" + sum + "/" + chars);
        }
    }

    /**
     * One PreparedStatement executed 10 times: it crosses prepareThreshold (5) into a named
     * server-side statement and then binary results fetched without Describe. Every value is
     * checked on every run; the server's pg_prepared_statements and the result format are
     * recorded per run.
     */
    static void prepared() throws Exception {
        String sql = "/* jdbc-matrix-prep */ select ?::int4 + 1 as i4, ?::int8 * 2 as i8,"
                + " ?::text || '!' as t, ?::float8 / 4 as f8, ?::numeric + 0.5 as n, not ?::bool as b,"
                + " ?::bytea as y, ?::uuid as u, ?::date + 1 as d, ?::int4 as nul, ?::timestamptz as ts";
        String named = "select count(*) from pg_prepared_statements"
                + " where statement like '%jdbc-matrix' || '-prep%'";
        StringJoiner onServer = new StringJoiner(",");
        StringJoiner binary = new StringJoiner(",");
        try (Connection conn = connect()) {
            try (PreparedStatement ps = conn.prepareStatement(sql)) {
                out("prepared.threshold", ps.unwrap(org.postgresql.PGStatement.class).getPrepareThreshold());
                for (int k = 0; k < 10; k++) {
                    String tag = "run " + k + " ";
                    int i4 = k * 1_000_003 - 7;
                    long i8 = Long.MAX_VALUE / 4 - k;
                    String text = "héllo-" + k + " ✓";
                    double f8 = k + 0.25;
                    BigDecimal num = new BigDecimal("12345678901234567890.123").add(BigDecimal.valueOf(k));
                    boolean flag = k % 2 == 0;
                    byte[] bytes = {0, (byte) k, (byte) 255, 10, 13};
                    UUID uuid = UUID.nameUUIDFromBytes(("jdbc-" + k).getBytes("UTF-8"));
                    LocalDate date = LocalDate.of(2024, 2, 28).plusDays(k);
                    OffsetDateTime ts = OffsetDateTime.of(2024, 1, 1, 12, 0, k, 123_456_000, ZoneOffset.UTC);
                    ps.setInt(1, i4);
                    ps.setLong(2, i8);
                    ps.setString(3, text);
                    ps.setDouble(4, f8);
                    ps.setBigDecimal(5, num);
                    ps.setBoolean(6, flag);
                    ps.setBytes(7, bytes);
                    ps.setObject(8, uuid);
                    ps.setObject(9, date);
                    ps.setNull(10, Types.INTEGER);
                    ps.setObject(11, ts);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(tag + "has row", true, rs.next());
                        binary.add(isBinary(rs, 1) ? "1" : "0");
                        check(tag + "i4", i4 + 1, rs.getInt("i4"));
                        check(tag + "i8", i8 * 2, rs.getLong("i8"));
                        check(tag + "t", text + "!", rs.getString("t"));
                        check(tag + "f8", f8 / 4, rs.getDouble("f8"));
                        check(tag + "n", 0, num.add(new BigDecimal("0.5")).compareTo(rs.getBigDecimal("n")));
                        check(tag + "b", !flag, rs.getBoolean("b"));
                        check(tag + "y", bytes, rs.getBytes("y"));
                        check(tag + "u", uuid, rs.getObject("u", UUID.class));
                        check(tag + "d", date.plusDays(1), rs.getObject("d", LocalDate.class));
                        check(tag + "nul", null, rs.getObject("nul"));
                        rs.getInt("nul");
                        check(tag + "nul wasNull", true, rs.wasNull());
                        check(tag + "ts", true, ts.isEqual(rs.getObject("ts", OffsetDateTime.class)));
                        check(tag + "single row", false, rs.next());
                    }
                    onServer.add(String.valueOf(scalar(conn, named)));
                }
            }
            out("prepared.named_on_server", onServer);
            out("prepared.binary_results", binary);
            // A new PreparedStatement with the same text reuses the driver's cached server statement.
            try (PreparedStatement again = conn.prepareStatement(sql)) {
                for (int k = 0; k < 3; k++) {
                    again.setInt(1, 41 + k);
                    again.setLong(2, 21);
                    again.setString(3, "again");
                    again.setDouble(4, 8.0);
                    again.setBigDecimal(5, BigDecimal.ONE);
                    again.setBoolean(6, true);
                    again.setBytes(7, new byte[] {1, 2, 3});
                    again.setObject(8, new UUID(0, k));
                    again.setObject(9, LocalDate.of(1999, 12, 31));
                    again.setNull(10, Types.INTEGER);
                    again.setObject(11, OffsetDateTime.of(2000, 1, 1, 0, 0, 0, 0, ZoneOffset.UTC));
                    try (ResultSet rs = again.executeQuery()) {
                        rs.next();
                        check("reuse i4", 42 + k, rs.getInt(1));
                        check("reuse i8", 42L, rs.getLong(2));
                        check("reuse t", "again!", rs.getString(3));
                        check("reuse d", LocalDate.of(2000, 1, 1), rs.getObject(9, LocalDate.class));
                    }
                }
                out("prepared.reuse_named_on_server", scalar(conn, named));
            }
        }
    }

    /** addBatch/executeBatch: 1000 parameterized inserts in one pipeline, then a Statement batch. */
    static void batch() throws Exception {
        try (Connection conn = connect(); Statement st = conn.createStatement()) {
            st.execute("create temp table jdbc_batch(id int primary key, label text not null)");
            try (PreparedStatement ps = conn.prepareStatement("insert into jdbc_batch values (?, ?)")) {
                for (int i = 1; i <= 1000; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row-" + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                out("batch.counts_len", counts.length);
                long ones = Arrays.stream(counts).filter(c -> c == 1).count();
                out("batch.counts_one", ones);
                check("batch update counts", 1000L, ones);
            }
            st.addBatch("insert into jdbc_batch values (1001, 'stmt-a')");
            st.addBatch("insert into jdbc_batch values (1002, 'stmt-b')");
            st.addBatch("update jdbc_batch set label = label || '+' where id <= 10");
            int[] counts = st.executeBatch();
            out("batch.statement_counts", show(counts));
            check("statement batch counts", new int[] {1, 1, 10}, counts);
            String summary = column(conn,
                    "select count(*) || '/' || sum(id) || '/' || count(*) filter (where label like '%+')"
                            + " from jdbc_batch");
            out("batch.table", summary);
            check("table after batches", "1002/502503/10", summary);
        }
    }

    /** Autocommit off: commit keeps rows, rollback drops them; one transaction id per transaction. */
    static void transactions() throws Exception {
        try (Connection conn = connect(); Statement st = conn.createStatement()) {
            st.execute("create temp table jdbc_tx(v int)");
            conn.setAutoCommit(false);
            try (PreparedStatement ins = conn.prepareStatement("insert into jdbc_tx values (?)")) {
                Object xid = scalar(conn, "select txid_current()");
                for (int v : new int[] {1, 2}) {
                    ins.setInt(1, v);
                    check("insert count", 1, ins.executeUpdate());
                }
                check("same transaction", xid, scalar(conn, "select txid_current()"));
                conn.commit();
                Object xid2 = scalar(conn, "select txid_current()");
                check("new transaction after commit", false, xid.equals(xid2));
                for (int v : new int[] {3, 4}) {
                    ins.setInt(1, v);
                    ins.executeUpdate();
                }
                check("rows visible inside transaction", "1,2,3,4",
                        column(conn, "select v from jdbc_tx order by v"));
                conn.rollback();
            }
            conn.setAutoCommit(true);
            String rows = column(conn, "select v from jdbc_tx order by v");
            out("tx.rows", rows);
            check("rows after commit + rollback", "1,2", rows);
        }
    }

    /** Savepoint: an error after a savepoint is undone by rollback(savepoint); the rest commits. */
    static void savepoint() throws Exception {
        try (Connection conn = connect(); Statement st = conn.createStatement()) {
            st.execute("create temp table jdbc_sp(v int)");
            conn.setAutoCommit(false);
            st.execute("insert into jdbc_sp values (1)");
            Savepoint sp = conn.setSavepoint("before_error");
            st.execute("insert into jdbc_sp values (2)");
            expectSqlError("22012", () -> st.execute("select 1/0"));
            conn.rollback(sp);
            st.execute("insert into jdbc_sp values (3)");
            conn.commit();
            conn.setAutoCommit(true);
            String rows = column(conn, "select v from jdbc_sp order by v");
            out("savepoint.rows", rows);
            check("rows", "1,3", rows);
        }
    }

    /** An error mid-transaction aborts it (25P02) until rollback; the connection stays usable. */
    static void errorInTransaction() throws Exception {
        try (Connection conn = connect(); Statement st = conn.createStatement()) {
            st.execute("create temp table jdbc_err(v int)");
            conn.setAutoCommit(false);
            st.execute("insert into jdbc_err values (42)");
            SQLException div = expectSqlError("22012", () -> st.executeQuery("select 1/0").close());
            out("error_tx.first", div.getSQLState());
            SQLException aborted = expectSqlError("25P02", () -> st.executeQuery("select 1").close());
            out("error_tx.second", aborted.getSQLState());
            conn.rollback();
            check("usable after rollback", 7, scalar(conn, "select 7"));
            conn.setAutoCommit(true);
            Object count = scalar(conn, "select count(*) from jdbc_err");
            out("error_tx.rows_after_rollback", count);
            check("rolled back row", 0L, count);
            check("still usable", "ok", scalar(conn, "select 'ok'"));
        }
    }

    /** An error on a statement already server-prepared (Bind/Execute only), then more runs. */
    static void errorInPrepared() throws Exception {
        try (Connection conn = connect();
                PreparedStatement ps = conn.prepareStatement("select 100 / ?::int4 as q")) {
            StringJoiner results = new StringJoiner(",");
            for (int d : new int[] {1, 2, 4, 5, 10, 20, 25, 50}) {
                ps.setInt(1, d);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    results.add(String.valueOf(rs.getInt(1)));
                }
            }
            ps.setInt(1, 0);
            expectSqlError("22012", () -> ps.executeQuery().close());
            for (int d : new int[] {4, 3}) {
                ps.setInt(1, d);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    results.add(String.valueOf(rs.getInt(1)));
                }
            }
            out("error_prepared.results", results);
            check("results", "100,50,25,20,10,5,4,2,25,33", results.toString());
        }
    }

    /** A batch that hits a unique violation midway; the connection keeps working afterwards. */
    static void errorInBatch() throws Exception {
        try (Connection conn = connect(); Statement st = conn.createStatement()) {
            st.execute("create temp table jdbc_batch_err(id int primary key)");
            try (PreparedStatement ps = conn.prepareStatement("insert into jdbc_batch_err values (?)")) {
                for (int id : new int[] {1, 2, 3, 2, 5}) {
                    ps.setInt(1, id);
                    ps.addBatch();
                }
                try {
                    ps.executeBatch();
                    throw new AssertionError("duplicate key batch succeeded");
                } catch (BatchUpdateException e) {
                    out("error_batch.sqlstate", e.getSQLState());
                    check("batch sqlstate", "23505", e.getSQLState());
                }
            }
            Object count = scalar(conn, "select count(*) from jdbc_batch_err");
            out("error_batch.rows", count);
            check("usable after failed batch", "ok", scalar(conn, "select 'ok'"));
        }
    }

    /** setFetchSize inside a transaction: Execute with max_rows, PortalSuspended, repeated. */
    static void fetchSize() throws Exception {
        try (Connection conn = connect()) {
            conn.setAutoCommit(false);
            long rows = 0;
            long sum = 0;
            try (PreparedStatement ps = conn.prepareStatement("select g from generate_series(1, ?) g")) {
                ps.setFetchSize(100);
                ps.setInt(1, 10000);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                    }
                }
            }
            conn.commit();
            out("fetch.rows", rows + "/" + sum);
            check("fetched", "10000/50005000", rows + "/" + sum);
        }
    }

    /** LISTEN on one connection, NOTIFY from another: the notification arrives through the relay. */
    static void notifications() throws Exception {
        try (Connection listener = connect(); Connection sender = connect()) {
            try (Statement st = listener.createStatement()) {
                st.execute("listen jdbc_matrix");
            }
            try (Statement st = sender.createStatement()) {
                st.execute("notify jdbc_matrix, 'hello through the relay'");
            }
            PGNotification[] got = listener.unwrap(PGConnection.class).getNotifications(10_000);
            check("notification received", true, got != null && got.length == 1);
            out("notify.payload", got[0].getName() + ":" + got[0].getParameter());
            check("payload", "jdbc_matrix:hello through the relay", got[0].getName() + ":" + got[0].getParameter());
        }
    }

    /** Statement.setQueryTimeout sends a CancelRequest on a new connection; the query stops. */
    static void cancel() throws Exception {
        try (Connection conn = connect(); Statement st = conn.createStatement()) {
            st.setQueryTimeout(1);
            long start = System.nanoTime();
            SQLException e = expectSqlError("57014", () -> st.execute("select pg_sleep(8)"));
            long ms = (System.nanoTime() - start) / 1_000_000;
            out("cancel.sqlstate", e.getSQLState());
            out("cancel.elapsed_ms", ms);
            check("cancelled well before the sleep ended", true, ms < 6000);
            st.setQueryTimeout(0);
            check("usable after cancel", 1, scalar(conn, "select 1"));
        }
    }
}
