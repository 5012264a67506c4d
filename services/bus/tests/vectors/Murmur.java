// Produces the murmur2 test vectors of src/partition.rs with Kafka's own code:
//   java -cp "$HOME/.cache/twinlog/kafka-4.4.0/*" Murmur.java
import org.apache.kafka.common.utils.Utils;
import java.nio.charset.StandardCharsets;
public class Murmur {
    public static void main(String[] args) {
        String[] keys = {"", "a", "ab", "abc", "abcd", "abcde", "1", "106540352242922", "123456789012345", "987654321098765", "twinlog", "phone_number_id"};
        for (String k : keys) {
            byte[] b = k.getBytes(StandardCharsets.UTF_8);
            int h = Utils.murmur2(b);
            int p = Utils.toPositive(h);
            System.out.println("(\"" + k + "\", " + h + ", " + (p % 12) + ", " + (p % 64) + "),");
        }
    }
}
