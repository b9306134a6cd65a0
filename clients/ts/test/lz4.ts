// Kafka LZ4 (frame format) for kafkajs, which ships no LZ4 codec; Ferry's producer compresses with LZ4.
import kafkajs from "kafkajs";
// @ts-expect-error lz4js ships no type declarations
import lz4js from "lz4js";

const lz4 = lz4js as { compress(src: Uint8Array): ArrayLike<number>; decompress(src: Uint8Array): ArrayLike<number> };

export function registerLz4(): void {
  kafkajs.CompressionCodecs[kafkajs.CompressionTypes.LZ4] = () => ({
    compress: async (encoder: { buffer: Buffer }) => Buffer.from(lz4.compress(encoder.buffer) as Uint8Array),
    decompress: async (buffer: Buffer) => Buffer.from(lz4.decompress(buffer) as Uint8Array),
  });
}
