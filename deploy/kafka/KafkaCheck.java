// Checks against the local twinlog Kafka broker, written with Kafka's own Java client.
// kafka.sh compiles this once against the cached jars (javac, Java 17) and runs:
//
//   KafkaCheck probe BOOTSTRAP          one metadata round trip (readiness probe); exit 0 if it answers
//   KafkaCheck transactions BOOTSTRAP   create a topic; commit 1,000 records and abort 1,000 more in
//                                       transactions; a read_committed consumer must see exactly the
//                                       1,000 committed ones (and read_uncommitted all 2,000); delete
//                                       the topic. Exit 1 on any mismatch.

import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class KafkaCheck {
    private static final int PARTITIONS = 4;
    private static final int COMMITTED = 1000;
    private static final int ABORTED = 1000;

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: KafkaCheck probe|transactions BOOTSTRAP");
            System.exit(2);
        }
        int rc;
        switch (args[0]) {
            case "probe":
                rc = probe(args[1]);
                break;
            case "transactions":
                rc = transactions(args[1]);
                break;
            default:
                System.err.println("unknown mode " + args[0]);
                rc = 2;
        }
        System.exit(rc);
    }

    private static Admin admin(String bootstrap, int timeoutMs) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, timeoutMs);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, timeoutMs);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "twinlog-kafka-check");
        return Admin.create(p);
    }

    static int probe(String bootstrap) {
        try (Admin admin = admin(bootstrap, 5000)) {
            Collection<Node> nodes = admin.describeCluster().nodes().get(6, TimeUnit.SECONDS);
            Set<String> topics = admin.listTopics().names().get(6, TimeUnit.SECONDS);
            System.out.println("ok nodes=" + nodes.size() + " topics=" + topics.size());
            return nodes.isEmpty() ? 1 : 0;
        } catch (Exception e) {
            System.err.println("probe failed: " + e);
            return 1;
        }
    }

    static int transactions(String bootstrap) throws Exception {
        String suffix = UUID.randomUUID().toString().substring(0, 8);
        String topic = "twinlog-txn-check-" + suffix;
        List<String> failures = new ArrayList<>();
        long t0 = System.nanoTime();

        try (Admin admin = admin(bootstrap, 30000)) {
            // --- topic create ---
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(30, TimeUnit.SECONDS);
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
            if (d.partitions().size() != PARTITIONS) {
                failures.add("created topic has " + d.partitions().size() + " partitions, expected " + PARTITIONS);
            }
            System.out.println("created topic " + topic + " with " + d.partitions().size() + " partitions");

            // --- one committed and one aborted transaction ---
            Properties pp = new Properties();
            pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "twinlog-txn-check-" + suffix);
            pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
            pp.put(ProducerConfig.ACKS_CONFIG, "all");
            pp.put(ProducerConfig.LINGER_MS_CONFIG, 5);
            pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
                producer.initTransactions();

                producer.beginTransaction();
                for (int i = 0; i < COMMITTED; i++) {
                    producer.send(new ProducerRecord<>(topic, Integer.toString(i), "committed-" + i));
                }
                producer.commitTransaction();

                producer.beginTransaction();
                for (int i = 0; i < ABORTED; i++) {
                    producer.send(new ProducerRecord<>(topic, Integer.toString(i), "aborted-" + i));
                }
                // Make sure the aborted records really reach the log before the abort, so that the
                // read_committed consumer has something to filter out.
                producer.flush();
                producer.abortTransaction();
            }
            System.out.println("producer: committed " + COMMITTED + ", aborted " + ABORTED);

            // --- consumers ---
            List<ConsumerRecord<String, String>> committed = readAll(bootstrap, topic, "read_committed");
            List<ConsumerRecord<String, String>> uncommitted = readAll(bootstrap, topic, "read_uncommitted");

            BitSet seen = new BitSet(COMMITTED);
            int wrong = 0;
            for (ConsumerRecord<String, String> r : committed) {
                if (!r.value().equals("committed-" + r.key())) {
                    wrong++;
                } else {
                    seen.set(Integer.parseInt(r.key()));
                }
            }
            System.out.println("read_committed consumer saw " + committed.size() + " records ("
                + seen.cardinality() + " distinct committed, " + wrong + " not committed)");
            System.out.println("read_uncommitted consumer saw " + uncommitted.size() + " records");
            if (committed.size() != COMMITTED || wrong != 0 || seen.cardinality() != COMMITTED) {
                failures.add("read_committed saw " + committed.size() + " records (" + wrong
                    + " aborted ones), expected exactly the " + COMMITTED + " committed");
            }
            if (uncommitted.size() != COMMITTED + ABORTED) {
                failures.add("read_uncommitted saw " + uncommitted.size() + ", expected " + (COMMITTED + ABORTED));
            }

            // --- topic delete ---
            admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            boolean gone = false;
            while (System.nanoTime() < deadline) {
                try {
                    admin.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof UnknownTopicOrPartitionException) {
                        gone = true;
                        break;
                    }
                    throw e;
                }
                Thread.sleep(200);
            }
            if (!gone) {
                failures.add("topic " + topic + " still exists 30 s after delete");
            } else {
                System.out.println("deleted topic " + topic);
            }
        }

        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        if (failures.isEmpty()) {
            System.out.println("PASS: transactions check (" + ms + " ms)");
            return 0;
        }
        for (String f : failures) {
            System.out.println("FAIL: " + f);
        }
        return 1;
    }

    // Reads every partition of the topic from the beginning up to its end offset (for
    // read_committed the end offset is the last stable offset).
    private static List<ConsumerRecord<String, String>> readAll(String bootstrap, String topic, String isolation) {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, Duration.ofSeconds(30));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (System.nanoTime() < deadline && !reached(consumer, end)) {
                consumer.poll(Duration.ofMillis(200)).forEach(out::add);
            }
            if (!reached(consumer, end)) {
                System.out.println(isolation + " consumer did not reach the end offsets " + end + " within 30 s");
            }
        }
        return out;
    }

    private static boolean reached(KafkaConsumer<String, String> consumer, Map<TopicPartition, Long> end) {
        for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
            if (consumer.position(e.getKey()) < e.getValue()) {
                return false;
            }
        }
        return true;
    }
}
