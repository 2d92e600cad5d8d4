/* Classify MNIST's test set on the device's arithmetic with a header exported by qmtik.

   Build (after `qmtik export-c mnist.qmt -o mnist_model.h`):
       cc -std=c99 -O2 main.c -o mnist && ./mnist mnist_test.bin
   mnist_test.bin holds qmtik-bin samples, as the C library qmtik.h wrote them: per sample,
   784 int8 input codes (pixel - 128) then 10 int8 targets, 127 for the digit's class. The codes
   go to mnist_model_predict as they are: integer arithmetic only, no floating point in the
   model (MNIST_MODEL_NO_FLOAT), none of it allocated. */
#define MNIST_MODEL_NO_FLOAT
#define MNIST_MODEL_IMPLEMENTATION
#include "mnist_model.h"

#include <stdio.h>

#define TARGET_ONE 127                          /* qmtik-bin's "this class" target byte */

int main(int argc, char **argv)
{
    static int8_t sample[MNIST_MODEL_INPUTS + MNIST_MODEL_OUTPUTS];
    static int8_t scratch[MNIST_MODEL_SCRATCH_BYTES];   /* no malloc: the caller owns all memory */
    int8_t scores[MNIST_MODEL_OUTPUTS];
    long total = 0, correct = 0;
    size_t got;
    FILE *file;
    int k, label;

    if (argc != 2) {
        fprintf(stderr, "usage: %s SAMPLES.bin\n", argv[0]);
        return 2;
    }
    file = fopen(argv[1], "rb");
    if (file == NULL) {
        perror(argv[1]);
        return 1;
    }
    while ((got = fread(sample, 1, sizeof sample, file)) == sizeof sample) {
        label = -1;
        for (k = 0; k < MNIST_MODEL_OUTPUTS; ++k)
            if (sample[MNIST_MODEL_INPUTS + k] == TARGET_ONE)
                label = k;
        if (mnist_model_predict(sample, scores, scratch) == label)
            ++correct;
        ++total;
    }
    if (ferror(file) || got != 0 || total == 0) {
        fprintf(stderr, "%s: %s\n", argv[1], ferror(file) ? "read error"
                : got != 0 ? "truncated: not a whole number of samples" : "no samples");
        fclose(file);
        return 1;
    }
    fclose(file);
    printf("accuracy %.2f%% on %ld samples\n", 100.0 * ((double)correct / (double)total), total);
    return 0;
}
