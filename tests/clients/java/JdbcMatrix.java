// One row of agentgate's client matrix: the PostgreSQL JDBC driver (Debian's
// libpostgresql-jdbc-java) logs in through the gateway with a JWT over TLS
// verified against the test CA, runs a query, a server-side prepared
// statement, COPY in and out (CopyManager), cancels a pg_sleep(10) with
// Statement.cancel(), and sees an expired token refused with SQLSTATE 28P01.
//
// Compiled and run by tests/integration/test_client_matrix.py:
//   javac -cp /usr/share/java/postgresql.jar -d OUT JdbcMatrix.java
//   java -cp OUT:/usr/share/java/postgresql.jar JdbcMatrix
// Settings come from the environment (AG_HOST, AG_PORT, AG_DATABASE, AG_USER,
// AG_TOKEN, AG_EXPIRED_TOKEN, AG_CA_FILE, optional AG_SSLMODE (default
// verify-full), AG_REFUSED_SQLSTATE (default 28P01), AG_REFUSED_PREFIX
// (default "token refused"; empty: message not checked)). Prints one
// PASS/FAIL line per step; exits 1 if any step failed.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public final class JdbcMatrix {
  private static int failures = 0;

  interface Step {
    void run() throws Exception;
  }

  private static void step(String name, Step body) {
    try {
      body.run();
      System.out.println("PASS jdbc " + name);
    } catch (Throwable e) {
      failures++;
      String state = (e instanceof SQLException) ? " [SQLSTATE " + ((SQLException) e).getSQLState() + "]" : "";
      System.out.println("FAIL jdbc " + name + ": " + e + state);
      e.printStackTrace(System.out);
    }
    System.out.flush();
  }

  private static String env(String name, String fallback) {
    String v = System.getenv(name);
    if (v == null) {
      if (fallback == null) throw new IllegalStateException("environment variable " + name + " is not set");
      return fallback;
    }
    return v;
  }

  private static void check(boolean ok, String what) {
    if (!ok) throw new AssertionError(what);
  }

  private static Connection connect(String token) throws SQLException {
    String url = "jdbc:postgresql://" + env("AG_HOST", "127.0.0.1") + ":" + env("AG_PORT", null) + "/"
        + env("AG_DATABASE", null);
    Properties p = new Properties();
    p.setProperty("user", env("AG_USER", "agent"));
    p.setProperty("password", token);
    p.setProperty("ssl", "true");
    p.setProperty("sslmode", env("AG_SSLMODE", "verify-full"));
    p.setProperty("sslrootcert", env("AG_CA_FILE", null));
    // No client certificate: keep the driver from looking in ~/.postgresql.
    p.setProperty("sslcert", "");
    p.setProperty("sslkey", "");
    p.setProperty("ApplicationName", "agentgate-jdbc-matrix");
    p.setProperty("connectTimeout", "10");
    p.setProperty("socketTimeout", "60");
    // Server-side named statements from the first execution on.
    p.setProperty("prepareThreshold", "1");
    return DriverManager.getConnection(url, p);
  }

  public static void main(String[] args) throws Exception {
    final Connection[] holder = new Connection[1];

    step("login over TLS (" + env("AG_SSLMODE", "verify-full") + ") with a JWT", () -> {
      holder[0] = connect(env("AG_TOKEN", null));
    });
    Connection conn = holder[0];
    if (conn == null) {
      System.out.println("FAIL jdbc: no connection, remaining steps skipped");
      System.exit(1);
    }

    step("query", () -> {
      try (Statement st = conn.createStatement();
           ResultSet rs = st.executeQuery("SELECT 1 + 1, 'héllo'::text, current_setting('server_version_num')::int")) {
        check(rs.next(), "no row");
        check(rs.getInt(1) == 2, "1 + 1 = " + rs.getInt(1));
        check("héllo".equals(rs.getString(2)), "text came back as " + rs.getString(2));
        check(rs.getInt(3) >= 150000, "server_version_num " + rs.getInt(3));
      }
      try (Statement st = conn.createStatement();
           ResultSet rs = st.executeQuery("SELECT count(*), sum(g) FROM generate_series(1, 50000) g")) {
        check(rs.next() && rs.getLong(1) == 50000 && rs.getLong(2) == 1250025000L, "aggregate");
      }
    });

    step("prepared statement (server-side, reused)", () -> {
      try (PreparedStatement ps = conn.prepareStatement("SELECT ?::int * 2, ?::text || '!', ?::numeric")) {
        for (int i = 0; i < 10; i++) {
          ps.setInt(1, i);
          ps.setString(2, "v" + i);
          ps.setBigDecimal(3, new java.math.BigDecimal("1.25").add(java.math.BigDecimal.valueOf(i)));
          try (ResultSet rs = ps.executeQuery()) {
            check(rs.next(), "no row for " + i);
            check(rs.getInt(1) == i * 2, "int " + rs.getInt(1));
            check(("v" + i + "!").equals(rs.getString(2)), "text " + rs.getString(2));
            check(rs.getBigDecimal(3).compareTo(new java.math.BigDecimal("1.25").add(java.math.BigDecimal.valueOf(i))) == 0,
                "numeric " + rs.getBigDecimal(3));
          }
        }
        check(ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare(), "statement not server-prepared");
      }
    });

    step("COPY in and out (CopyManager)", () -> {
      try (Statement st = conn.createStatement()) {
        st.execute("CREATE TEMP TABLE jdbc_copy (id int, label text)");
      }
      CopyManager cm = conn.unwrap(PGConnection.class).getCopyAPI();
      StringBuilder in = new StringBuilder();
      int rows = 20000;
      for (int i = 1; i <= rows; i++) {
        in.append(i).append('\t').append(i % 3 == 0 ? "\\N" : "row\\t" + i).append('\n');
      }
      byte[] inBytes = in.toString().getBytes(StandardCharsets.UTF_8);
      long copied = cm.copyIn("COPY jdbc_copy FROM STDIN", new ByteArrayInputStream(inBytes));
      check(copied == rows, "copyIn reported " + copied);
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      long out_rows = cm.copyOut("COPY (SELECT * FROM jdbc_copy ORDER BY id) TO STDOUT", out);
      check(out_rows == rows, "copyOut reported " + out_rows);
      check(java.util.Arrays.equals(inBytes, out.toByteArray()), "COPY out differs from COPY in");
    });

    step("cancel pg_sleep(10) with Statement.cancel()", () -> {
      try (Statement st = conn.createStatement()) {
        Thread canceller = new Thread(() -> {
          try {
            Thread.sleep(1000);
            st.cancel();
          } catch (Exception e) {
            System.out.println("cancel thread: " + e);
          }
        });
        long started = System.nanoTime();
        canceller.start();
        try {
          st.executeQuery("SELECT pg_sleep(10)");
          throw new AssertionError("pg_sleep(10) was not canceled");
        } catch (SQLException e) {
          check("57014".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
        } finally {
          canceller.join();
        }
        double seconds = (System.nanoTime() - started) / 1e9;
        check(seconds < 8, "cancel took " + seconds + " s");
      }
      try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 42")) {
        check(rs.next() && rs.getInt(1) == 42, "session unusable after cancel");
      }
    });

    step("close", () -> conn.close());

    step("expired token refused with SQLSTATE " + env("AG_REFUSED_SQLSTATE", "28P01"), () -> {
      try (Connection c = connect(env("AG_EXPIRED_TOKEN", null))) {
        throw new AssertionError("logged in with an expired token");
      } catch (SQLException e) {
        check(env("AG_REFUSED_SQLSTATE", "28P01").equals(e.getSQLState()),
            "SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
        String prefix = env("AG_REFUSED_PREFIX", "token refused");
        String msg = e.getMessage() == null ? "" : e.getMessage();
        String serverMsg = (e instanceof org.postgresql.util.PSQLException
            && ((org.postgresql.util.PSQLException) e).getServerErrorMessage() != null)
            ? ((org.postgresql.util.PSQLException) e).getServerErrorMessage().getMessage() : msg;
        check(prefix.isEmpty() || serverMsg.startsWith(prefix), "message: " + msg);
        System.out.println("  refused: " + msg);
      }
    });

    System.out.println(failures == 0 ? "jdbc: all steps passed" : "jdbc: " + failures + " step(s) failed");
    System.exit(failures == 0 ? 0 : 1);
  }
}
