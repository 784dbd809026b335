import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

/**
 * Ready exits 0 once the broker at args[0] answers a real metadata request (describeCluster with
 * at least one broker), or 1 after args[1] seconds (default 60). Used by scripts/kafka.sh start.
 */
public class Ready {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    long deadline = System.currentTimeMillis() + 1000L * (args.length > 1 ? Long.parseLong(args[1]) : 60);
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
    p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
    String last = "";
    while (System.currentTimeMillis() < deadline) {
      try (Admin admin = Admin.create(p)) {
        int n = admin.describeCluster().nodes().get().size();
        if (n > 0) {
          System.out.println("ready: " + n + " broker(s) at " + bootstrap);
          return;
        }
      } catch (Exception e) {
        last = e.toString();
      }
      Thread.sleep(200);
    }
    System.err.println("kafka not ready at " + bootstrap + ": " + last);
    System.exit(1);
  }
}
