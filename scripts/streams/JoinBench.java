// JoinBench: the joiner's Kafka Streams baseline. The same join as Understudy's joiner, written
// the standard way: an outer stream-stream join of champion inference events and shadow results
// by request id (window 60 s, grace 5 s), exactly_once_v2, RocksDB window stores with changelog
// topics; with --labels, the comparisons are also joined with labels over a 7-day window.
// Values are joined as bytes (no Avro decoding), which only makes the baseline faster.
//
//   java -cp 'scripts/streams/.cache/libs/*' scripts/streams/JoinBench.java \
//       <brokers> <application-id> <stream-threads> <labels:true|false> <output-topic> <state-dir> \
//       [<commit-interval-ms>]   (default 100, Kafka Streams' default under exactly_once_v2)
//
// It runs until killed; integration/cmd/joinerbench measures it through its committed offsets.
import java.time.Duration;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.StreamJoined;

public class JoinBench {
    static byte[] concat(byte[] a, byte[] b) {
        int la = a == null ? 0 : a.length, lb = b == null ? 0 : b.length;
        byte[] out = new byte[la + lb + 8];
        if (a != null) System.arraycopy(a, 0, out, 4, la);
        if (b != null) System.arraycopy(b, 0, out, 8 + la, lb);
        out[0] = (byte) (la >>> 24); out[1] = (byte) (la >>> 16); out[2] = (byte) (la >>> 8); out[3] = (byte) la;
        return out;
    }

    public static void main(String[] args) {
        String brokers = args[0], appId = args[1], output = args[4], stateDir = args[5];
        int threads = Integer.parseInt(args[2]);
        boolean labels = Boolean.parseBoolean(args[3]);
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArray().getClass());
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArray().getClass());
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        if (args.length > 6) {
            p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Integer.parseInt(args[6]));
        }

        StreamsBuilder b = new StreamsBuilder();
        KStream<byte[], byte[]> inference = b.stream("understudy.inference.v1");
        KStream<byte[], byte[]> shadow = b.stream("understudy.shadow.v1");
        KStream<byte[], byte[]> comparisons = inference.outerJoin(shadow, JoinBench::concat,
                JoinWindows.ofTimeDifferenceAndGrace(Duration.ofSeconds(60), Duration.ofSeconds(5)),
                StreamJoined.with(Serdes.ByteArray(), Serdes.ByteArray(), Serdes.ByteArray()));
        comparisons.to(output);
        if (labels) {
            KStream<byte[], byte[]> lab = b.stream("understudy.labels.v1");
            comparisons.join(lab, JoinBench::concat,
                    JoinWindows.ofTimeDifferenceAndGrace(Duration.ofDays(7), Duration.ofSeconds(5)),
                    StreamJoined.with(Serdes.ByteArray(), Serdes.ByteArray(), Serdes.ByteArray()))
                .to(output);
        }
        KafkaStreams streams = new KafkaStreams(b.build(), p);
        Runtime.getRuntime().addShutdownHook(new Thread(streams::close));
        streams.start();
    }
}
