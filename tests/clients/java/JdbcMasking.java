import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;

// Reads masked rows through the gateway with the extended protocol. With
// prepareThreshold=2 the driver switches to a named server-side statement
// and binary transfer for int8 and date after the second execution, so the
// gateway must mask rows whose columns were described once, earlier.
// Prints one line per execution: card_number|email|pin|created.
public class JdbcMasking {
  public static void main(String[] args) throws Exception {
    try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
      PreparedStatement ps = c.prepareStatement(
          "SELECT card_number, email, (SELECT pin FROM vault LIMIT 1) AS pin, created_at::date AS created "
              + "FROM customers WHERE id = ?");
      for (int i = 0; i < 5; i++) {
        ps.setInt(1, 1);
        try (ResultSet rs = ps.executeQuery()) {
          if (!rs.next()) throw new IllegalStateException("no row");
          long card = rs.getLong(1);
          String email = rs.getString(2);
          int pin = rs.getInt(3);
          String created = rs.getDate(4).toString();
          System.out.println(card + "|" + email + "|" + pin + "|" + created);
        }
      }
    }
  }
}
